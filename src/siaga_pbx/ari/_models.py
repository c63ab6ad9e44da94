"""Pydantic models of the ARI resources and events this service uses.

The authority is Asterisk's own Swagger 1.1 reference
(``/usr/share/asterisk/rest-api/*.json``). Rules that hold for every model:

- Frozen, and extra fields are ignored: Asterisk adds fields between versions,
  and an added field must never turn a good event into a malformed one.
- Fields the reference marks required are required; everything else defaults
  to ``None``. The common event fields (``application``, ``timestamp``,
  ``asterisk_id``) are optional so that a fatal event such as
  ``ApplicationReplaced`` is recognised even if Asterisk trims it.
- Lists are tuples, so a parsed event can be shared and hashed without anyone
  mutating it under the consumer.

``parse_event`` is the only way in from the wire. It never does I/O, and it
raises nothing but ``MalformedEvent``; an event type we do not model becomes an
``UnknownEvent`` that keeps the raw JSON object.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ._errors import MalformedEvent

__all__ = [
    "Application",
    "ApplicationReplaced",
    "Bridge",
    "BridgeCreated",
    "BridgeDestroyed",
    "CallerId",
    "Channel",
    "ChannelCallerId",
    "ChannelConnectedLine",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelLeftBridge",
    "ChannelStateChange",
    "ChannelVarset",
    "ConfigTuple",
    "ContactInfo",
    "ContactStatusChange",
    "DeviceState",
    "DeviceStateChanged",
    "Dial",
    "DialplanLocation",
    "Endpoint",
    "EndpointStateChange",
    "Event",
    "KnownEvent",
    "LiveRecording",
    "Playback",
    "PlaybackFinished",
    "PlaybackStarted",
    "RecordingFailed",
    "RecordingFinished",
    "RecordingStarted",
    "StasisEnd",
    "StasisStart",
    "StoredRecording",
    "UnknownEvent",
    "describe_validation_error",
    "escape_preview",
    "parse_event",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --- resources ---------------------------------------------------------------


class CallerId(_Model):
    """ARI ``CallerID``: a name and a number, either may be empty."""

    name: str
    number: str


class DialplanLocation(_Model):
    """ARI ``DialplanCEP``: where in the dialplan a channel is."""

    context: str
    exten: str
    priority: int
    app_name: str
    app_data: str


class Channel(_Model):
    """ARI ``Channel`` snapshot."""

    id: str
    name: str
    state: str
    caller: CallerId
    connected: CallerId
    dialplan: DialplanLocation
    creationtime: datetime
    language: str
    channelvars: dict[str, str] | None = None


class Bridge(_Model):
    """ARI ``Bridge`` snapshot."""

    id: str
    technology: str
    bridge_type: str
    bridge_class: str
    channels: tuple[str, ...]
    name: str = ""


class Playback(_Model):
    """ARI ``Playback``: one media playback on a channel or bridge."""

    id: str
    media_uri: str
    target_uri: str
    state: str
    next_media_uri: str | None = None
    language: str | None = None


class LiveRecording(_Model):
    """ARI ``LiveRecording``: a recording in progress (or just ended)."""

    name: str
    format: str
    target_uri: str
    state: str
    duration: int | None = None
    talking_duration: int | None = None
    silence_duration: int | None = None
    cause: str | None = None


class StoredRecording(_Model):
    """ARI ``StoredRecording``: a finished recording on Asterisk's disk."""

    name: str
    format: str


class Endpoint(_Model):
    """ARI ``Endpoint``: e.g. a PJSIP handset and the channels it has."""

    technology: str
    resource: str
    channel_ids: tuple[str, ...]
    state: str | None = None


class ContactInfo(_Model):
    """ARI ``ContactInfo``: one SIP contact of an endpoint and its qualify status
    ("Reachable", "Unreachable", "Unknown", "NonQualified", "Removed")."""

    uri: str
    contact_status: str
    aor: str
    roundtrip_usec: str | None = None


class ConfigTuple(_Model):
    """ARI ``ConfigTuple``: one attribute of a sorcery object (``/asterisk/config/dynamic``).

    Asterisk answers with every field of the object in its own canonical
    spelling (``allow`` as ``(ulaw|alaw)``, booleans as ``true``/``false``),
    and a ``set_var`` entry as its variable's name. An auth's ``password`` is
    among them: never log a list of these."""

    attribute: str
    value: str


class DeviceState(_Model):
    """ARI ``DeviceState``."""

    name: str
    state: str


class Application(_Model):
    """ARI ``Application``: what Asterisk holds for our Stasis app (resync source)."""

    name: str
    channel_ids: tuple[str, ...]
    bridge_ids: tuple[str, ...]
    endpoint_ids: tuple[str, ...]
    device_names: tuple[str, ...]


# --- events --------------------------------------------------------------------


class _Event(_Model):
    application: str | None = None
    timestamp: datetime | None = None
    asterisk_id: str | None = None


class StasisStart(_Event):
    type: Literal["StasisStart"]
    args: tuple[str, ...]
    channel: Channel
    replace_channel: Channel | None = None


class StasisEnd(_Event):
    type: Literal["StasisEnd"]
    channel: Channel


class ChannelStateChange(_Event):
    type: Literal["ChannelStateChange"]
    channel: Channel


class ChannelDestroyed(_Event):
    type: Literal["ChannelDestroyed"]
    cause: int
    cause_txt: str
    channel: Channel
    tech_cause: int | None = None


class ChannelHangupRequest(_Event):
    type: Literal["ChannelHangupRequest"]
    channel: Channel
    cause: int | None = None
    tech_cause: int | None = None
    soft: bool | None = None


class ChannelDtmfReceived(_Event):
    type: Literal["ChannelDtmfReceived"]
    digit: str
    duration_ms: int
    channel: Channel


class ChannelEnteredBridge(_Event):
    type: Literal["ChannelEnteredBridge"]
    bridge: Bridge
    channel: Channel | None = None


class ChannelLeftBridge(_Event):
    type: Literal["ChannelLeftBridge"]
    bridge: Bridge
    channel: Channel


class ChannelVarset(_Event):
    type: Literal["ChannelVarset"]
    variable: str
    value: str
    channel: Channel | None = None


class ChannelCallerId(_Event):
    type: Literal["ChannelCallerId"]
    caller_presentation: int
    caller_presentation_txt: str
    channel: Channel


class ChannelConnectedLine(_Event):
    type: Literal["ChannelConnectedLine"]
    channel: Channel


class Dial(_Event):
    type: Literal["Dial"]
    dialstatus: str
    peer: Channel
    caller: Channel | None = None
    dialstring: str | None = None
    forward: str | None = None


class PlaybackStarted(_Event):
    type: Literal["PlaybackStarted"]
    playback: Playback


class PlaybackFinished(_Event):
    type: Literal["PlaybackFinished"]
    playback: Playback


class RecordingStarted(_Event):
    type: Literal["RecordingStarted"]
    recording: LiveRecording


class RecordingFinished(_Event):
    type: Literal["RecordingFinished"]
    recording: LiveRecording


class RecordingFailed(_Event):
    type: Literal["RecordingFailed"]
    recording: LiveRecording


class EndpointStateChange(_Event):
    type: Literal["EndpointStateChange"]
    endpoint: Endpoint


class ContactStatusChange(_Event):
    """A contact's qualify status changed; ``endpoint`` lists the channels it has now."""

    type: Literal["ContactStatusChange"]
    endpoint: Endpoint
    contact_info: ContactInfo


class DeviceStateChanged(_Event):
    type: Literal["DeviceStateChanged"]
    device_state: DeviceState


class ApplicationReplaced(_Event):
    type: Literal["ApplicationReplaced"]


class BridgeCreated(_Event):
    type: Literal["BridgeCreated"]
    bridge: Bridge


class BridgeDestroyed(_Event):
    type: Literal["BridgeDestroyed"]
    bridge: Bridge


class UnknownEvent(_Event):
    """An event type we do not model; ``raw`` is the whole JSON object."""

    type: str
    raw: dict[str, Any]


KnownEvent: TypeAlias = Annotated[
    StasisStart
    | StasisEnd
    | ChannelStateChange
    | ChannelDestroyed
    | ChannelHangupRequest
    | ChannelDtmfReceived
    | ChannelEnteredBridge
    | ChannelLeftBridge
    | ChannelVarset
    | ChannelCallerId
    | ChannelConnectedLine
    | Dial
    | PlaybackStarted
    | PlaybackFinished
    | RecordingStarted
    | RecordingFinished
    | RecordingFailed
    | EndpointStateChange
    | ContactStatusChange
    | DeviceStateChanged
    | ApplicationReplaced
    | BridgeCreated
    | BridgeDestroyed,
    Field(discriminator="type"),
]
"""Every event we model, discriminated on its ``type`` field."""

Event: TypeAlias = KnownEvent | UnknownEvent
"""What ``parse_event`` returns."""

_KNOWN_ADAPTER: TypeAdapter[KnownEvent] = TypeAdapter(KnownEvent)
_KNOWN_TYPES: frozenset[str] = frozenset(
    get_args(cls.model_fields["type"].annotation)[0] for cls in get_args(get_args(KnownEvent)[0])
)
_MAX_ERRORS_SHOWN = 3


def escape_preview(data: str | bytes, limit: int = 200) -> str:
    """A log-safe preview of a payload: truncated, control characters escaped."""
    text = repr(data[:limit])  # repr escapes control and non-printable characters
    return text + f"... ({len(data)} chars)" if len(data) > limit else text


def _escaped(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def describe_validation_error(exc: ValidationError) -> str:
    """Where and why validation failed, without echoing the (untrusted) input."""
    # The locations and messages only: pydantic's own str() repeats the input,
    # which is caller-controlled text we do not want in an exception message.
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [
        f"{'.'.join(str(p) for p in err['loc']) or '<event>'}: {err['msg']}"
        for err in errors[:_MAX_ERRORS_SHOWN]
    ]
    if len(errors) > _MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - _MAX_ERRORS_SHOWN} more")
    return _escaped("; ".join(parts))


def _unknown_event(event_type: str, obj: dict[str, Any]) -> UnknownEvent:
    # Never fails: the common fields are kept only when they are well-formed.
    try:
        return UnknownEvent.model_validate({**obj, "type": event_type, "raw": obj})
    except (ValidationError, RecursionError):
        return UnknownEvent(type=event_type, raw=dict(obj))


def parse_event(data: bytes | str) -> Event:
    """Parse one websocket message into an event; raise ``MalformedEvent`` if we cannot."""
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise MalformedEvent(f"event is not valid JSON: {_escaped(str(exc))}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent(f"event is a JSON {type(obj).__name__}, not an object")
    event_type = obj.get("type")
    if not isinstance(event_type, str):
        raise MalformedEvent("event has no string 'type' field")
    if event_type not in _KNOWN_TYPES:
        return _unknown_event(event_type, obj)
    try:
        return _KNOWN_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise MalformedEvent(
            f"{_escaped(event_type)[:64]} event is malformed: {describe_validation_error(exc)}"
        ) from None
    except RecursionError:
        raise MalformedEvent(f"{_escaped(event_type)[:64]} event is nested too deeply") from None
