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

Same auth as the incident API (``_api._guard`` over ``siaga_pbx.auth``), so
``add_incident_routes`` must have been called on ``app`` first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from siaga_pbx import auth, core

from ._api import _READ, _ApiError, _Caller, _guard, _json_object
from ._api_models import field_errors
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
    app.router.add_get("/api/callbacks", _guard(_CALLBACKS, _list_callbacks))
    app.router.add_post("/api/callbacks/{call_id}/resolve", _guard(_CALLBACKS, _resolve))


async def _list_callbacks(request: web.Request, caller: _Caller) -> web.StreamResponse:
    if request.query:
        raise _ApiError(400, "invalid query", dict.fromkeys(request.query, "unknown parameter"))
    items = await request.app[_STORE].pending_callbacks()
    return web.json_response({"items": items})


async def _resolve(request: web.Request, caller: _Caller) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    if not (0 < len(call_id) <= 128 and call_id.isprintable() and " " not in call_id):
        raise _ApiError(400, "bad path parameter", {"call_id": "1..128 printable characters"})
    try:
        body = ResolveBody.model_validate(await _json_object(request))
    except ValidationError as exc:
        raise _ApiError(400, "invalid resolution", field_errors(exc)) from None
    if not request.app[_HOLDS](call_id):
        # Not in the core's memory (evicted past its bound, or not restored
        # yet): the record decides. Asking it never holds up a call: this
        # runs in the HTTP handler, not on the consumer.
        row = await request.app[_STORE].callback(call_id)
        if row is None:
            raise _ApiError(404, "no such callback")
        if row["status"] == "resolved":
            raise _ApiError(409, f"callback already resolved ({row['resolution']})")
    event = core.CallbackResolved(
        call_id, core.CallbackResolution(body.resolution), caller.who, body.note
    )
    request.app[_SUBMIT](event)
    log.info("callback_resolution_accepted", call_id=call_id, resolution=body.resolution)
    return web.json_response(
        {"accepted": "resolve", "call_id": call_id, "resolution": body.resolution}, status=202
    )
