"""The callback list and its resolution, over HTTP (aiohttp).

| route                                   | roles                    |
| --------------------------------------- | ------------------------ |
| GET  /api/callbacks                     | admin, supervisor, taker |
| POST /api/callbacks/{call_id}/resolve   | admin, supervisor, taker |

PostgreSQL is the record of pending callbacks; the core holds a bounded copy
for the live state (``/api/state``). ``GET /api/callbacks`` lists every
pending one from the record. A resolution, body
``{"resolution": "called_back"|"called_again"|"unreachable"|"not_needed",
"note": "..."}``, goes to the core as ``CallbackResolved`` (``submit``): the
live state drops it at once, and the journal carries it to PostgreSQL (status,
who, when, how) and to the incident's timeline (``callback_resolved``), through
the outbox, so it is never lost while PostgreSQL is down. Answers: 202 when
accepted; 404 for a callback neither the core nor the record knows; 409 when
the record has it resolved already; 503 when only the record could say and
PostgreSQL is unreachable.

Declared like the incident API (``siaga_pbx.adapters.routes``, over
``siaga_pbx.auth``), so ``add_incident_routes`` must have been called on
``app`` first: it installs the tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from siaga_pbx import audit, auth, core

from ..adapters import routes
from ..adapters.problems import Problem
from ._api import _READ, _db_errors
from ._store import IncidentStore

__all__ = ["add_callback_routes"]

log = structlog.get_logger(__name__)

_CALLBACKS = _READ

_STORE = web.AppKey("callback_store", IncidentStore)
_SUBMIT: web.AppKey[Callable[[core.Event], None]] = web.AppKey("callback_submit", object)  # type: ignore[arg-type]
_HOLDS: web.AppKey[Callable[[str], bool]] = web.AppKey("callback_holds", object)  # type: ignore[arg-type]


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resolution: Literal["called_back", "called_again", "unreachable", "not_needed"]
    note: str = Field("", max_length=500)


class CallbackPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    call_id: str

    @field_validator("call_id")
    @classmethod
    def _plain(cls, value: str) -> str:
        if not (0 < len(value) <= 128 and value.isprintable() and " " not in value):
            raise ValueError("1..128 printable characters, no space")
        return value


class NoQuery(BaseModel):
    """A query string with no parameters: any one given is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CallbackAccepted(BaseModel):
    accepted: Literal["resolve"]
    call_id: str
    resolution: str


routes_ = routes.RouteTable("callbacks")


def add_callback_routes(
    app: web.Application,
    *,
    store: IncidentStore,
    submit: Callable[[core.Event], None],
    holds: Callable[[str], bool],
) -> None:
    """Mount the callback routes. ``submit`` hands a core event to the
    consumer; ``holds(call_id)`` says whether the core holds that callback."""
    if auth.TOKENS not in app:
        raise RuntimeError("add_incident_routes first: the callback routes share its auth")
    app[_STORE] = store
    app[_SUBMIT] = submit
    app[_HOLDS] = holds
    routes_.install(app)


@routes_.get(
    "/api/callbacks",
    summary="Pending callbacks, longest abandoned first",
    roles=_CALLBACKS,
    query=NoQuery,
    problems=(503,),
)
@_db_errors
async def _list_callbacks(request: web.Request) -> web.StreamResponse:
    items = await request.app[_STORE].pending_callbacks()
    return web.json_response({"items": items})


@routes_.post(
    "/api/callbacks/{call_id}/resolve",
    summary="Resolve a callback: called back, called again, unreachable or not needed",
    roles=_CALLBACKS,
    path_params=CallbackPath,
    body=ResolveBody,
    response=CallbackAccepted,
    status=202,
    problems=(404, 409, 503),
    audited=("callback.resolve", "callback:{call_id}"),
)
@_db_errors
async def _resolve(request: web.Request) -> web.StreamResponse:
    call_id = routes.path(request, CallbackPath).call_id
    body = routes.body(request, ResolveBody)
    caller = routes.caller(request)
    # The note may name the caller: it stays with the callback (purged with it).
    audit.note(request, after={"resolution": body.resolution})
    if not request.app[_HOLDS](call_id):
        # Not in the core's memory (evicted past its bound, or not restored
        # yet): the record decides. Asking it never holds up a call: this
        # runs in the HTTP handler, not on the consumer.
        row = await request.app[_STORE].callback(call_id)
        if row is None:
            raise Problem(404, "no such callback")
        if row["status"] == "resolved":
            raise Problem(409, f"callback already resolved ({row['resolution']})")
    event = core.CallbackResolved(
        call_id, core.CallbackResolution(body.resolution), caller.who, body.note
    )
    request.app[_SUBMIT](event)
    log.info("callback_resolution_accepted", call_id=call_id, resolution=body.resolution)
    return web.json_response(
        {"accepted": "resolve", "call_id": call_id, "resolution": body.resolution}, status=202
    )
