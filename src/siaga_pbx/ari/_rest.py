"""The REST half of our ARI client: one generic ``request`` plus typed helpers.

Rules:
- Path segments are ids we validated (``check_id``), so a path is never built
  from text that could carry ``/``, ``?`` or ``..``. Query parameters go through
  aiohttp's ``params=`` and are URL-encoded there, never string-built.
- ARI's multi-valued query parameters (``media``, ``channel``, ``eventSource``,
  ``appArgs``) are one comma-joined value: Asterisk splits on commas and keeps
  only the last of repeated parameters. An item that contains a comma cannot be
  sent, so it is refused with ``InvalidArgument``.
- Every failure becomes an ``AriError`` subclass naming method, path, status and
  Asterisk's own ``message``. Network failures become ``AriUnavailable``. A
  timed-out POST may still have happened on Asterisk's side; ids are ours and
  deterministic, so retrying it yields a harmless ``AriConflict``.
- The password lives only inside the prepared ``Authorization`` header: it is
  in no attribute, repr or log line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, TypeAdapter, ValidationError
from yarl import URL

from ._errors import AriBadResponse, AriUnavailable, InvalidArgument, error_class_for_status
from ._models import (
    Application,
    Bridge,
    Channel,
    ConfigTuple,
    Endpoint,
    LiveRecording,
    Playback,
    StoredRecording,
    describe_validation_error,
)

__all__ = ["AriRest", "HangupReason", "check_id"]

HangupReason = Literal[
    "normal",
    "busy",
    "congestion",
    "no_answer",
    "timeout",
    "rejected",
    "unallocated",
    "normal_unspecified",
    "number_incomplete",
    "codec_mismatch",
    "interworking",
    "failure",
    "answered_elsewhere",
]
Direction = Literal["both", "in", "out"]
SnoopDirection = Literal["none", "both", "out", "in"]
IfExists = Literal["fail", "overwrite", "append"]
QueryValue = str | int | bool | None

# Asterisk uniqueids ("1732812345.12", optionally "host-" prefixed), our own
# "siaga-..." ids, endpoint resources ("1001", "+6221...") and recording names.
# The first character excludes "." so "." and ".." can never be a segment.
_ID = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._:@+-]{0,149}")
_DTMF = re.compile(r"[0-9A-Da-d*#,]{1,64}")
_MAX_MESSAGE = 500

_M = TypeVar("_M", bound=BaseModel)


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is safe as one URL path segment; else raise ``InvalidArgument``."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidArgument(f"{kind} {value!r} is not a valid ARI id")
    return value


def _text_param(kind: str, value: str) -> str:
    # Free text (caller id, media URI, endpoint) is fine in a query string, but
    # control characters are never legitimate and would end up in Asterisk's logs.
    if not isinstance(value, str) or not value or not value.isprintable():
        raise InvalidArgument(f"{kind} must be non-empty printable text, got {value!r}")
    return value


def _comma_list(kind: str, values: str | Sequence[str], *, allow_empty: bool = False) -> str:
    items = [values] if isinstance(values, str) else list(values)
    if not items and not allow_empty:
        raise InvalidArgument(f"{kind} needs at least one item")
    for item in items:
        if not isinstance(item, str) or "," in item or not item.isprintable():
            raise InvalidArgument(f"{kind} item {item!r} must be printable text without commas")
    return ",".join(items)


def _encode_params(params: Mapping[str, QueryValue] | None) -> dict[str, str] | None:
    # yarl refuses bools; ARI spells them "true"/"false". None means "leave out".
    if params is None:
        return None
    out: dict[str, str] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        else:
            out[key] = str(value)
    return out


class AriRest:
    """A thin, typed client for Asterisk's ARI REST interface.

    ``base_url`` is the ARI root, e.g. ``http://127.0.0.1:8088/ari``. The
    session is the caller's; this class never closes it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        username: str,
        password: str,
        *,
        timeout_s: float = 5.0,
    ) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise InvalidArgument(f"ARI base URL must be http(s)://host:port/ari, got {base_url!r}")
        if url.user is not None or url.password is not None:
            raise InvalidArgument("pass ARI credentials as arguments, not inside the URL")
        if timeout_s <= 0:
            raise InvalidArgument(f"timeout_s must be positive, got {timeout_s!r}")
        self._session = session
        self._base = str(url).rstrip("/")
        self._username = username
        self._headers = {"Authorization": aiohttp.encode_basic_auth(username, password)}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"AriRest(base_url={self._base!r}, username={self._username!r})"

    @property
    def base_url(self) -> str:
        return self._base

    # --- the generic request ---------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
    ) -> Any:
        """Send one request; return the decoded JSON body (``None`` when empty).

        ``path`` is relative to the ARI root and starts with ``/``; it must not
        carry a query string (use ``params``).
        """
        if not path.startswith("/") or any(c in path for c in "?#%\\") or not path.isprintable():
            raise InvalidArgument(f"ARI path must be '/...' without query or escapes: {path!r}")
        method = method.upper()
        url = URL(self._base + path, encoded=False)
        try:
            async with self._session.request(
                method,
                url,
                params=_encode_params(params),
                json=json,
                headers=self._headers,
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                body = await resp.read()
                content_type = resp.content_type
        except TimeoutError:
            raise AriUnavailable(
                method,
                path,
                None,
                f"Asterisk is unreachable at {self._base}: no answer within {self._timeout_s:g} s",
            ) from None
        except aiohttp.ClientError as exc:
            # Refused, reset, closed mid-answer, or not speaking HTTP at all.
            raise AriUnavailable(
                method,
                path,
                None,
                f"Asterisk is unreachable at {self._base}: {type(exc).__name__}: {exc}",
            ) from exc

        if status >= 300:
            message = _error_message(body)
            structlog.get_logger("siaga_pbx.ari.rest").debug(
                "ari.rest.failed", method=method, path=path, status=status, message=message
            )
            raise error_class_for_status(status)(method, path, status, message)
        if not body:
            return None
        if content_type != "application/json":
            return body
        try:
            return _json_loads(body)
        except ValueError:
            raise AriBadResponse(
                method, path, status, "Asterisk answered with a body that is not valid JSON"
            ) from None

    async def _model(
        self,
        model: type[_M],
        method: str,
        path: str,
        *,
        params: Mapping[str, QueryValue] | None = None,
        json: Any = None,
    ) -> _M:
        body = await self.request(method, path, params=params, json=json)
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            raise AriBadResponse(
                method,
                path,
                None,
                f"Asterisk's answer is not a valid {model.__name__}: "
                f"{describe_validation_error(exc)}",
            ) from None

    async def _models(
        self, model: type[_M], path: str, *, method: str = "GET", json: Any = None
    ) -> list[_M]:
        body = await self.request(method, path, json=json)
        try:
            return TypeAdapter(list[model]).validate_python(body)  # type: ignore[valid-type]
        except ValidationError as exc:
            raise AriBadResponse(
                method,
                path,
                None,
                f"Asterisk's answer is not a list of {model.__name__}: "
                f"{describe_validation_error(exc)}",
            ) from None

    # --- asterisk and applications ------------------------------------------

    async def asterisk_info(self) -> dict[str, Any]:
        """GET /asterisk/info: build, system, config and status of Asterisk."""
        body = await self.request("GET", "/asterisk/info")
        if not isinstance(body, dict):
            raise AriBadResponse("GET", "/asterisk/info", None, "expected a JSON object")
        return body

    async def get_application(self, app: str) -> Application:
        """GET /applications/{app}: the channels, bridges and endpoints our app holds."""
        return await self._model(Application, "GET", f"/applications/{check_id('app', app)}")

    async def subscribe(self, app: str, event_source: str | Sequence[str]) -> Application:
        """POST /applications/{app}/subscription, e.g. ``endpoint:PJSIP/1001``."""
        return await self._model(
            Application,
            "POST",
            f"/applications/{check_id('app', app)}/subscription",
            params={"eventSource": _comma_list("eventSource", event_source)},
        )

    async def unsubscribe(self, app: str, event_source: str | Sequence[str]) -> Application:
        """DELETE /applications/{app}/subscription."""
        return await self._model(
            Application,
            "DELETE",
            f"/applications/{check_id('app', app)}/subscription",
            params={"eventSource": _comma_list("eventSource", event_source)},
        )

    async def set_event_filter(self, app: str, allowed: Iterable[str]) -> Application:
        """PUT /applications/{app}/eventFilter: only these event types reach
        the app's websocket. Asterisk still makes and serialises the others
        (the filter is applied at the websocket), but does not send them."""
        body = {"allowed": [{"type": t} for t in sorted(allowed)], "disallowed": []}
        return await self._model(
            Application, "PUT", f"/applications/{check_id('app', app)}/eventFilter", json=body
        )

    # --- channels --------------------------------------------------------------

    async def list_channels(self) -> list[Channel]:
        """GET /channels: every channel Asterisk has (not only ours)."""
        return await self._models(Channel, "/channels")

    async def get_channel(self, channel_id: str) -> Channel:
        """GET /channels/{id}."""
        return await self._model(Channel, "GET", _channel(channel_id))

    async def answer(self, channel_id: str) -> None:
        """POST /channels/{id}/answer."""
        await self.request("POST", f"{_channel(channel_id)}/answer")

    async def hangup(self, channel_id: str, reason: HangupReason = "normal") -> None:
        """DELETE /channels/{id}?reason=..."""
        await self.request("DELETE", _channel(channel_id), params={"reason": reason})

    async def ring(self, channel_id: str) -> None:
        """POST /channels/{id}/ring: indicate ringing to the caller."""
        await self.request("POST", f"{_channel(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        """DELETE /channels/{id}/ring."""
        await self.request("DELETE", f"{_channel(channel_id)}/ring")

    async def moh_start(self, channel_id: str, moh_class: str | None = None) -> None:
        """POST /channels/{id}/moh: music on hold (Asterisk's default class if None)."""
        params = {"mohClass": None if moh_class is None else _text_param("moh_class", moh_class)}
        await self.request("POST", f"{_channel(channel_id)}/moh", params=params)

    async def moh_stop(self, channel_id: str) -> None:
        """DELETE /channels/{id}/moh."""
        await self.request("DELETE", f"{_channel(channel_id)}/moh")

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        playback_id: str,
        lang: str | None = None,
    ) -> Playback:
        """POST /channels/{id}/play/{playback_id}: play one or more media URIs in order."""
        params: dict[str, QueryValue] = {
            "media": _comma_list("media", media),
            "lang": None if lang is None else check_id("lang", lang),
        }
        path = f"{_channel(channel_id)}/play/{check_id('playback_id', playback_id)}"
        return await self._model(Playback, "POST", path, params=params)

    async def stop_playback(self, playback_id: str) -> None:
        """DELETE /playbacks/{id}."""
        await self.request("DELETE", f"/playbacks/{check_id('playback_id', playback_id)}")

    async def originate(
        self,
        endpoint: str,
        *,
        channel_id: str,
        app: str,
        app_args: Sequence[str] = (),
        timeout_s: int = 30,
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """POST /channels with our own ``channelId``: dial ``endpoint`` into Stasis ``app``."""
        params: dict[str, QueryValue] = {
            "endpoint": _text_param("endpoint", endpoint),
            "channelId": check_id("channel_id", channel_id),
            "app": check_id("app", app),
            "appArgs": _comma_list("appArgs", app_args, allow_empty=True) or None,
            "timeout": int(timeout_s),
            "callerId": None if caller_id is None else _text_param("caller_id", caller_id),
        }
        body = None if variables is None else {"variables": dict(variables)}
        return await self._model(Channel, "POST", "/channels", params=params, json=body)

    async def continue_in_dialplan(
        self, channel_id: str, context: str, extension: str, priority: int = 1
    ) -> None:
        """POST /channels/{id}/continue: leave Stasis to a dialplan location."""
        params: dict[str, QueryValue] = {
            "context": _text_param("context", context),
            "extension": _text_param("extension", extension),
            "priority": int(priority),
        }
        await self.request("POST", f"{_channel(channel_id)}/continue", params=params)

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        """POST /channels/{id}/variable."""
        params = {"variable": _text_param("variable", variable), "value": value}
        await self.request("POST", f"{_channel(channel_id)}/variable", params=params)

    async def get_variable(self, channel_id: str, variable: str) -> str:
        """GET /channels/{id}/variable: the value as a string."""
        path = f"{_channel(channel_id)}/variable"
        body = await self.request(
            "GET", path, params={"variable": _text_param("variable", variable)}
        )
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            raise AriBadResponse("GET", path, None, "expected {'value': <string>}")
        value: str = body["value"]
        return value

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        """POST /channels/{id}/redirect: redirect a ringing/answered channel elsewhere."""
        params = {"endpoint": _text_param("endpoint", endpoint)}
        await self.request("POST", f"{_channel(channel_id)}/redirect", params=params)

    async def snoop(
        self,
        channel_id: str,
        snoop_id: str,
        app: str,
        spy: SnoopDirection = "none",
        whisper: SnoopDirection = "none",
    ) -> Channel:
        """POST /channels/{id}/snoop/{snoop_id}: a spy/whisper channel into ``app``."""
        path = f"{_channel(channel_id)}/snoop/{check_id('snoop_id', snoop_id)}"
        params = {"app": check_id("app", app), "spy": spy, "whisper": whisper}
        return await self._model(Channel, "POST", path, params=params)

    async def mute(self, channel_id: str, direction: Direction = "both") -> None:
        """POST /channels/{id}/mute."""
        await self.request("POST", f"{_channel(channel_id)}/mute", params={"direction": direction})

    async def unmute(self, channel_id: str, direction: Direction = "both") -> None:
        """DELETE /channels/{id}/mute."""
        await self.request(
            "DELETE", f"{_channel(channel_id)}/mute", params={"direction": direction}
        )

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        between_ms: int | None = None,
        duration_ms: int | None = None,
    ) -> None:
        """POST /channels/{id}/dtmf: digits 0-9, A-D, * and #; ',' is a pause."""
        if not isinstance(dtmf, str) or not _DTMF.fullmatch(dtmf):
            raise InvalidArgument(f"DTMF must be 1..64 of 0-9 A-D * # ,; got {dtmf!r}")
        params: dict[str, QueryValue] = {
            "dtmf": dtmf,
            "between": between_ms,
            "duration": duration_ms,
        }
        await self.request("POST", f"{_channel(channel_id)}/dtmf", params=params)

    # --- bridges ---------------------------------------------------------------

    async def list_bridges(self) -> list[Bridge]:
        """GET /bridges."""
        return await self._models(Bridge, "/bridges")

    async def get_bridge(self, bridge_id: str) -> Bridge:
        """GET /bridges/{id}."""
        return await self._model(Bridge, "GET", _bridge(bridge_id))

    async def create_bridge(
        self, bridge_id: str, type: str = "mixing", name: str | None = None
    ) -> Bridge:
        """POST /bridges/{id}: create (or update) a bridge with our deterministic id."""
        params: dict[str, QueryValue] = {
            "type": _comma_list("type", type.split(",")),
            "name": None if name is None else _text_param("name", name),
        }
        return await self._model(Bridge, "POST", _bridge(bridge_id), params=params)

    async def add_channel(
        self,
        bridge_id: str,
        channel_ids: str | Sequence[str],
        role: str | None = None,
        mute: bool | None = None,
    ) -> None:
        """POST /bridges/{id}/addChannel."""
        params: dict[str, QueryValue] = {
            "channel": _channel_list(channel_ids),
            "role": None if role is None else check_id("role", role),
            "mute": mute,
        }
        await self.request("POST", f"{_bridge(bridge_id)}/addChannel", params=params)

    async def remove_channel(self, bridge_id: str, channel_ids: str | Sequence[str]) -> None:
        """POST /bridges/{id}/removeChannel."""
        params = {"channel": _channel_list(channel_ids)}
        await self.request("POST", f"{_bridge(bridge_id)}/removeChannel", params=params)

    async def destroy_bridge(self, bridge_id: str) -> None:
        """DELETE /bridges/{id}: Asterisk never removes the bridges we create."""
        await self.request("DELETE", _bridge(bridge_id))

    async def record_bridge(
        self,
        bridge_id: str,
        name: str,
        format: str = "wav",
        if_exists: IfExists = "fail",
    ) -> LiveRecording:
        """POST /bridges/{id}/record: record the bridge, not a channel about to join it."""
        params = {
            "name": check_id("recording name", name),
            "format": check_id("format", format),
            "ifExists": if_exists,
        }
        return await self._model(
            LiveRecording, "POST", f"{_bridge(bridge_id)}/record", params=params
        )

    # --- recordings and endpoints -----------------------------------------------

    async def stop_recording(self, name: str) -> None:
        """POST /recordings/live/{name}/stop: stop and store the recording."""
        await self.request("POST", f"/recordings/live/{check_id('recording name', name)}/stop")

    async def get_stored_recording(self, name: str) -> StoredRecording:
        """GET /recordings/stored/{name}."""
        path = f"/recordings/stored/{check_id('recording name', name)}"
        return await self._model(StoredRecording, "GET", path)

    async def get_endpoint(self, tech: str, resource: str) -> Endpoint:
        """GET /endpoints/{tech}/{resource}, e.g. ``("PJSIP", "1001")``."""
        path = f"/endpoints/{check_id('tech', tech)}/{check_id('resource', resource)}"
        return await self._model(Endpoint, "GET", path)

    async def list_endpoints(self, tech: str) -> list[Endpoint]:
        """GET /endpoints/{tech}: every endpoint of one technology, e.g. ``PJSIP``."""
        return await self._models(Endpoint, f"/endpoints/{check_id('tech', tech)}")

    # --- sorcery objects (/asterisk/config/dynamic) ------------------------------
    #
    # Asterisk's configuration objects, e.g. res_pjsip's endpoint, auth and aor.
    # Creating, updating and deleting works only for object types whose sorcery
    # mapping has a writable wizard (asterisk/sorcery.conf); an object from a
    # read-only one (pjsip.conf) answers 403 (``AriAuthError`` with status 403). The answers hold
    # every field of the object, secrets included: they are returned, never logged.

    async def get_config_object(
        self, config_class: str, object_type: str, object_id: str
    ) -> list[ConfigTuple]:
        """GET /asterisk/config/dynamic/{class}/{type}/{id}; ``AriNotFound`` if absent."""
        return await self._models(ConfigTuple, _config_object(config_class, object_type, object_id))

    async def put_config_object(
        self,
        config_class: str,
        object_type: str,
        object_id: str,
        fields: Sequence[tuple[str, str]],
    ) -> list[ConfigTuple]:
        """PUT /asterisk/config/dynamic/{class}/{type}/{id}: create the object, or
        update it (the listed fields change, the others keep their values).

        ``fields`` are (attribute, value) pairs applied in order, so a list may
        repeat an attribute (``disallow`` before ``allow``). Returns the object."""
        body = {
            "fields": [
                {
                    "attribute": check_id("attribute", attribute),
                    "value": _config_value(attribute, value),
                }
                for attribute, value in fields
            ]
        }
        return await self._models(
            ConfigTuple,
            _config_object(config_class, object_type, object_id),
            method="PUT",
            json=body,
        )

    async def delete_config_object(
        self, config_class: str, object_type: str, object_id: str
    ) -> None:
        """DELETE /asterisk/config/dynamic/{class}/{type}/{id}."""
        await self.request("DELETE", _config_object(config_class, object_type, object_id))


def _channel(channel_id: str) -> str:
    return f"/channels/{check_id('channel_id', channel_id)}"


def _config_object(config_class: str, object_type: str, object_id: str) -> str:
    return (
        f"/asterisk/config/dynamic/{check_id('config_class', config_class)}"
        f"/{check_id('object_type', object_type)}/{check_id('object_id', object_id)}"
    )


def _config_value(attribute: str, value: str) -> str:
    # Empty is a legitimate value (it clears a field); control characters are not,
    # and the message names the attribute only: the value may be a password.
    if not isinstance(value, str) or not value.isprintable():
        raise InvalidArgument(f"the value of {attribute!r} must be printable text")
    return value


def _bridge(bridge_id: str) -> str:
    return f"/bridges/{check_id('bridge_id', bridge_id)}"


def _channel_list(channel_ids: str | Sequence[str]) -> str:
    ids = [channel_ids] if isinstance(channel_ids, str) else list(channel_ids)
    return _comma_list("channel", [check_id("channel_id", c) for c in ids])


def _json_loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _error_message(body: bytes) -> str:
    """Asterisk's ``{"message": ...}`` if present, else the start of the body."""
    try:
        decoded = _json_loads(body)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("message"), str):
        text: str = decoded["message"]
    else:
        text = body[:_MAX_MESSAGE].decode("utf-8", "replace") or "(empty body)"
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text[:_MAX_MESSAGE]
