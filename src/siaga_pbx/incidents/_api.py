"""REST API over the incident record (aiohttp).

Auth: ``Authorization: Bearer <token>`` through ``siaga_pbx.auth``, the one
auth path of every route; ``tokens`` maps token -> role.

| route                                 | roles                    |
| ------------------------------------- | ------------------------ |
| GET   /api/incidents                  | admin, supervisor, taker |
| GET   /api/incidents/{id}             | admin, supervisor, taker |
| PATCH /api/incidents/{id}             | admin, supervisor, taker |
| GET   /api/recordings/{id}            | admin, supervisor        |

The callback routes (``/api/callbacks``) are in ``_callbacks_api``, behind the
same auth.

``ops`` watches aggregate dashboards and gets 403 here: incident records hold
personal data (UU PDP). Missing/unknown token -> 401; wrong role -> 403; bad
input -> 400 ``{"error": ..., "fields": {...}}``; PostgreSQL unreachable -> 503.
Edits are audited in the timeline as ``role:<token fingerprint>``; the token
itself is never stored or logged.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import structlog
from aiohttp import web
from pydantic import ValidationError

from .. import auth
from ..auth import ROLES, Caller
from ._api_models import IncidentPatch, ListParams, field_errors
from ._recordings import describe_recording
from ._store import IncidentQuery, IncidentStore, InvalidCursor, decode_cursor

__all__ = ["INCIDENT_STORE", "ROLES", "add_incident_routes"]

log = structlog.get_logger(__name__)

_READ = frozenset({"admin", "supervisor", "taker"})
_EDIT = _READ
_RECORDINGS = frozenset({"admin", "supervisor"})


_Caller = Caller


INCIDENT_STORE = web.AppKey("incident_store", IncidentStore)

_Handler = Callable[[web.Request, _Caller], Awaitable[web.StreamResponse]]


class _ApiError(Exception):
    def __init__(self, status: int, error: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.fields = dict(fields or {})

    def response(self) -> web.Response:
        body: dict[str, object] = {"error": self.error}
        if self.fields:
            body["fields"] = self.fields
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return web.json_response(body, status=self.status, headers=headers)


def add_incident_routes(
    app: web.Application, store: IncidentStore, tokens: Mapping[str, str]
) -> None:
    """Mount the incident API on ``app``. ``tokens``: bearer token -> role."""
    auth.install(app, tokens)
    app[INCIDENT_STORE] = store
    app.router.add_get("/api/incidents", _guard(_READ, _list_incidents))
    app.router.add_get("/api/incidents/{id}", _guard(_READ, _get_incident))
    app.router.add_patch("/api/incidents/{id}", _guard(_EDIT, _patch_incident))
    app.router.add_get("/api/recordings/{id}", _guard(_RECORDINGS, _get_recording))


# ---- auth and error translation ------------------------------------------------


def _guard(
    roles: frozenset[str], handler: _Handler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            caller = auth.authorize(request, roles)
            with structlog.contextvars.bound_contextvars(api_user=caller.who):
                return await handler(request, caller)
        except auth.AuthError as exc:
            return _ApiError(exc.status, exc.message).response()
        except _ApiError as exc:
            return exc.response()
        except (
            asyncpg.exceptions.DataError,
            asyncpg.exceptions.IntegrityConstraintViolationError,
        ) as exc:
            # Validation should have caught it; still the client's input.
            log.warning("incident_api_rejected_by_db", error=str(exc), path=request.path)
            return _ApiError(400, "rejected by the database", {"_": str(exc)}).response()
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
        ) as exc:
            log.error(  # noqa: TRY400 - an outage, not a bug: no traceback wanted
                "incident_api_db_unavailable", error=str(exc), path=request.path
            )
            return _ApiError(503, "incident database unavailable").response()

    return wrapped


def _uuid_param(request: web.Request, name: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise _ApiError(400, "bad path parameter", {name: "not a UUID"}) from None


async def _json_object(request: web.Request) -> dict[str, object]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _ApiError(400, "body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "body must be a JSON object")
    return body


# ---- handlers ------------------------------------------------------------------


async def _list_incidents(request: web.Request, caller: _Caller) -> web.StreamResponse:
    query = request.query
    repeated = sorted({k for k in query if len(query.getall(k)) > 1})
    if repeated:
        raise _ApiError(400, "invalid query", dict.fromkeys(repeated, "given more than once"))
    try:
        params = ListParams.model_validate(dict(query))
    except ValidationError as exc:
        raise _ApiError(400, "invalid query", field_errors(exc)) from None
    try:
        cursor = None if params.cursor is None else decode_cursor(params.cursor)
    except InvalidCursor as exc:
        raise _ApiError(400, "invalid query", {"cursor": str(exc)}) from None
    page = await request.app[INCIDENT_STORE].list_incidents(
        IncidentQuery(
            opened_from=params.opened_from,
            opened_to=params.opened_to,
            category=params.category,
            disposition=params.disposition,
            number=params.number,
            limit=params.limit,
            cursor=cursor,
        )
    )
    return web.json_response({"items": page.items, "next_cursor": page.next_cursor})


async def _get_incident(request: web.Request, caller: _Caller) -> web.StreamResponse:
    incident = await request.app[INCIDENT_STORE].get_incident(_uuid_param(request))
    if incident is None:
        raise _ApiError(404, "no such incident")
    return web.json_response(incident)


async def _patch_incident(request: web.Request, caller: _Caller) -> web.StreamResponse:
    incident_id = _uuid_param(request)
    body = await _json_object(request)
    try:
        patch = IncidentPatch.model_validate(body)
    except ValidationError as exc:
        raise _ApiError(400, "invalid classification", field_errors(exc)) from None
    incident = await request.app[INCIDENT_STORE].classify(incident_id, patch.changes(), caller.who)
    if incident is None:
        raise _ApiError(404, "no such incident")
    log.info("incident_classified", incident_id=str(incident_id), fields=sorted(patch.changes()))
    return web.json_response(incident)


async def _get_recording(request: web.Request, caller: _Caller) -> web.StreamResponse:
    recording_id = _uuid_param(request)
    row = await request.app[INCIDENT_STORE].recording(recording_id)
    if row is None:
        raise _ApiError(404, "no such recording")
    try:
        info = await describe_recording(row.path)
    except FileNotFoundError:
        info = None
    if info is None:
        log.error("recording_file_missing", recording_id=str(recording_id), path=row.path)
        raise _ApiError(404, "recording file missing")
    if info.sha256 != row.sha256 or info.size_bytes != row.size_bytes:
        log.error(
            "recording_tampered",
            recording_id=str(recording_id),
            call_id=row.call_id,
            path=row.path,
            expected_sha256=row.sha256,
            actual_sha256=info.sha256,
        )
        raise _ApiError(409, "recording failed its integrity check; refusing to serve it")
    log.info("recording_downloaded", recording_id=str(recording_id), call_id=row.call_id)
    # The file may in theory change between the check and the send; the
    # checksum header lets the client verify what it received.
    return web.FileResponse(
        row.path,
        headers={
            "Content-Type": "audio/wav",
            "Content-Disposition": f'attachment; filename="{recording_id}.wav"',
            "X-Recording-SHA256": row.sha256,
        },
    )
