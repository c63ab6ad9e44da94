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
personal data (UU PDP). Missing/unknown token -> 401; wrong role -> 403; invalid
input -> 422 naming each field; PostgreSQL unreachable -> 503. Every error is an
RFC 9457 problem (``siaga_pbx.adapters.problems``); every route is declared on
``routes`` (``siaga_pbx.adapters.routes``), which validates its input and puts it
in the OpenAPI document.
Edits are recorded in the timeline (who: ``auth.Caller.who``, with every
field's old and new value) and in the audit (``siaga_pbx.audit``: who, and the
names of the fields changed); the token itself is never stored or logged.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from .. import audit, auth
from ..adapters import routes
from ..adapters.problems import FieldError, Problem
from ..auth import ROLES, Caller
from ._api_models import IncidentPatch, ListParams
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


class _ApiError(Problem):
    """A problem with the old signature: ``fields`` maps a field path to its message."""

    def __init__(self, status: int, error: str, fields: Mapping[str, str] | None = None) -> None:
        errors = [FieldError(field=k, message=v) for k, v in (fields or {}).items()]
        super().__init__(status, error, errors=errors)


class IdPath(BaseModel):
    """A path whose ``{id}`` is a UUID."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: uuid.UUID


routes_ = routes.RouteTable("incidents")


def add_incident_routes(
    app: web.Application, store: IncidentStore, tokens: Mapping[str, str]
) -> None:
    """Mount the incident API on ``app``. ``tokens``: bearer token -> role."""
    auth.install(app, tokens)
    if audit.AUDIT not in app:  # the service's app has its sink already (make_app)
        audit.install(app, audit.MemorySink())
    app[INCIDENT_STORE] = store
    routes_.install(app)


# ---- database errors -------------------------------------------------------------


def _db_errors(handler: routes.Handler) -> routes.Handler:
    """The database's refusals and outages as problems (422, 503)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except (
            asyncpg.exceptions.DataError,
            asyncpg.exceptions.IntegrityConstraintViolationError,
        ) as exc:
            # Validation should have caught it; still the client's input.
            log.warning("incident_api_rejected_by_db", error=str(exc), path=request.path)
            raise Problem(422, "the incident database refused this input") from None
        except (
            OSError,
            TimeoutError,
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
        ) as exc:
            log.error(  # noqa: TRY400 - an outage, not a bug: no traceback wanted
                "incident_api_db_unavailable", error=str(exc), path=request.path
            )
            raise Problem(503, "incident database unavailable") from None

    return wrapped


def _guard(
    roles: frozenset[str], handler: _Handler
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """An undeclared handler ``(request, caller)`` behind auth and ``_db_errors``.
    Declare routes on a ``routes.RouteTable`` instead: it does both."""

    @_db_errors
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            caller = auth.authorize(request, roles)
        except auth.AuthError as exc:
            raise Problem(exc.status, exc.message, headers=exc.headers) from None
        with structlog.contextvars.bound_contextvars(api_user=caller.who):
            return await handler(request, caller)

    return wrapped


async def _json_object(request: web.Request) -> dict[str, object]:
    """The body as a JSON object, for an undeclared handler (a declared one says ``body=``)."""
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _ApiError(422, "the request is not valid", {"": "the body must be a JSON object"})
    return body


# ---- handlers ------------------------------------------------------------------

_STORE_PROBLEMS = (503,)


@routes_.get(
    "/api/incidents",
    summary="Incidents, newest first, a page at a time",
    roles=_READ,
    query=ListParams,
    problems=_STORE_PROBLEMS,
)
@_db_errors
async def _list_incidents(request: web.Request) -> web.StreamResponse:
    params = routes.query(request, ListParams)
    try:
        cursor = None if params.cursor is None else decode_cursor(params.cursor)
    except InvalidCursor as exc:
        raise Problem(
            422,
            "the request is not valid",
            errors=[FieldError(in_="query", field="cursor", message=str(exc))],
        ) from None
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


@routes_.get(
    "/api/incidents/{id}",
    summary="One incident: its calls, timeline, recordings and links",
    roles=_READ,
    path_params=IdPath,
    problems=(404, *_STORE_PROBLEMS),
)
@_db_errors
async def _get_incident(request: web.Request) -> web.StreamResponse:
    incident_id = routes.path(request, IdPath).id
    incident = await request.app[INCIDENT_STORE].get_incident(incident_id)
    if incident is None:
        raise Problem(404, "no such incident")
    return web.json_response(incident)


@routes_.patch(
    "/api/incidents/{id}",
    summary="Classify an incident (only the fields sent change)",
    roles=_EDIT,
    path_params=IdPath,
    body=IncidentPatch,
    problems=(404, *_STORE_PROBLEMS),
    audited=("incident.classify", "incident:{id}"),
)
@_db_errors
async def _patch_incident(request: web.Request) -> web.StreamResponse:
    incident_id = routes.path(request, IdPath).id
    patch = routes.body(request, IncidentPatch)
    who = routes.caller(request).who
    # The names of the fields, not their values: those are personal data, kept
    # in the incident's timeline and purged with it (docs/AUDIT.md).
    audit.note(request, after={"fields": sorted(patch.changes())})
    incident = await request.app[INCIDENT_STORE].classify(incident_id, patch.changes(), who)
    if incident is None:
        raise Problem(404, "no such incident")
    log.info("incident_classified", incident_id=str(incident_id), fields=sorted(patch.changes()))
    return web.json_response(incident)


@routes_.get(
    "/api/recordings/{id}",
    summary="A call's recording (WAV), checked against its journalled size and SHA-256",
    roles=_RECORDINGS,
    path_params=IdPath,
    content_type="audio/wav",
    problems=(404, 409, *_STORE_PROBLEMS),
)
@_db_errors
async def _get_recording(request: web.Request) -> web.StreamResponse:
    recording_id = routes.path(request, IdPath).id
    row = await request.app[INCIDENT_STORE].recording(recording_id)
    if row is None:
        raise Problem(404, "no such recording")
    try:
        info = await describe_recording(row.path)
    except FileNotFoundError:
        info = None
    if info is None:
        log.error("recording_file_missing", recording_id=str(recording_id), path=row.path)
        raise Problem(404, "recording file missing")
    if info.sha256 != row.sha256 or info.size_bytes != row.size_bytes:
        log.error(
            "recording_tampered",
            recording_id=str(recording_id),
            call_id=row.call_id,
            path=row.path,
            expected_sha256=row.sha256,
            actual_sha256=info.sha256,
        )
        raise Problem(409, "recording failed its integrity check; refusing to serve it")
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
