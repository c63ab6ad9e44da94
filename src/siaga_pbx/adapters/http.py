"""The service's own HTTP API: health, metrics, live state, taker control.

(The configuration routes, queues included, are ``siaga_pbx.centre``'s.)

Every request to /api needs a bearer token (``siaga_pbx.auth``, the one auth
path); the token's role decides what it may do. Each route is declared once
(``routes.RouteTable``: roles, models, answers), which also puts it in the
OpenAPI document; input is validated with its pydantic models, and every error
is an RFC 9457 problem (``problems``), never a 500 for bad input.

This adapter never imports the service. It reads the distribution core
(snapshots, the configuration in force, and ``check`` to refuse a request
the core would refuse, with the core's own message) and hands changes to
the consumer's inbox through ``submit``, so the API never changes the core's
state itself. Reading runs on the same event loop, between two consumer steps.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import audit, auth, conference, core
from ..people import allowed, without_personal_data
from . import problems, routes
from .metrics import Metrics

Role = Literal["admin", "supervisor", "taker", "ops"]
Submit = Callable[[core.Event | conference.Event], None]
DISTRIBUTOR: web.AppKey[core.Distributor] = web.AppKey("distributor", core.Distributor)
SUBMIT: web.AppKey[Submit] = web.AppKey("submit", object)  # type: ignore[arg-type]
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, fields: Mapping[str, str] | None = None) -> web.Response:
    """A problem response (``problems.problem``); ``fields``: field path -> message."""
    errors = [problems.FieldError(field=k, message=v) for k, v in (fields or {}).items()]
    return problems.problem(status, message, errors=errors)


def require(*roles: Role) -> Callable[[Handler], Handler]:
    """Decorator: the request must carry a token whose role is one of ``roles``.
    A declared route (``routes.RouteTable``) says ``roles=`` instead."""

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            try:
                auth.authorize(request, roles)
            except auth.AuthError as exc:
                return problems.problem(exc.status, exc.message, headers=exc.headers)
            return await handler(request)

        return checked

    return wrap


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise problems.Problem(400, f"the body is not valid JSON: {exc}") from None


def validation_error(exc: ValidationError) -> web.Response:
    return problems.from_validation(exc, "body").response()


api = routes.RouteTable("state and takers")
_EVERYONE = ("admin", "supervisor", "taker", "ops")
_STAFF = ("admin", "supervisor", "taker")


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("break", min_length=1, max_length=64, pattern=r"^[\w .-]+$")


class TakerAccepted(BaseModel):
    accepted: Literal["login", "logout", "pause", "unpause"]
    taker_id: str


@api.get("/healthz", summary="Is the service up, and connected to Asterisk", roles=None)
async def healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


@api.get("/metrics", summary="Prometheus metrics", roles=None, content_type="text/plain")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@api.get(
    "/api/state",
    summary="The live state: queues with their waiting callers, call takers, callbacks",
    roles=_EVERYONE,
)
async def state(request: web.Request) -> web.StreamResponse:
    snapshot = request.app[DISTRIBUTOR].snapshot(time.time())
    if not allowed(auth.authenticate(request), "personal.read"):
        return web.json_response(without_personal_data(snapshot))  # ops: UU PDP
    return web.json_response(snapshot)


_TAKER_ACTION: dict[str, Any] = {
    "roles": _STAFF,
    "response": TakerAccepted,
    "status": 202,
    "problems": (404, 409),
}


@api.post(
    "/api/takers/{taker_id}/login",
    summary="Log a call taker in",
    audited=("taker.login", "taker:{taker_id}"),
    **_TAKER_ACTION,
)
@api.post(
    "/api/takers/{taker_id}/logout",
    summary="Log a call taker out",
    audited=("taker.logout", "taker:{taker_id}"),
    **_TAKER_ACTION,
)
@api.post(
    "/api/takers/{taker_id}/unpause",
    summary="Unpause a call taker",
    audited=("taker.unpause", "taker:{taker_id}"),
    **_TAKER_ACTION,
)
@api.post(
    "/api/takers/{taker_id}/pause",
    summary="Pause a call taker",
    body=PauseBody,
    body_required=False,
    audited=("taker.pause", "taker:{taker_id}"),
    **_TAKER_ACTION,
)
async def taker_action(request: web.Request) -> web.StreamResponse:
    distributor = request.app[DISTRIBUTOR]
    taker_id = request.match_info["taker_id"]
    known = {t.taker_id for t in distributor.config.takers}
    if taker_id not in known:
        return error(404, f"no call taker {taker_id!r}")
    if not allowed(auth.authenticate(request), "taker.act", taker_id):
        return error(403, f"a call taker acts only on their own state, not {taker_id!r}")
    resource = request.match_info.route.resource  # the route template names the action
    action = resource.canonical.rsplit("/", 1)[1] if resource else ""
    event: core.Event
    if action == "login":
        event = core.TakerLoggedIn(taker_id)
    elif action == "logout":
        event = core.TakerLoggedOut(taker_id)
    elif action == "unpause":
        event = core.TakerUnpaused(taker_id)
    else:
        event = core.TakerPaused(taker_id, reason=routes.body(request, PauseBody).reason)
    try:
        distributor.check(event)  # refused now, with the core's reason, not after a 202
    except core.RemoteProtocolError as exc:
        return error(409, str(exc))
    request.app[SUBMIT](event)
    return web.json_response({"accepted": action, "taker_id": taker_id}, status=202)


def make_app(
    *,
    distributor: core.Distributor,
    submit: Submit,
    metrics_: Metrics,
    tokens: Mapping[str, str],
    health: Callable[[], dict[str, Any]],
    audit_sink: audit.AuditSink | None = None,
) -> web.Application:
    """The service's app. ``audit_sink``: where audit rows go (the runtime
    gives the outbox's; without one they are kept in memory only)."""
    app = web.Application(client_max_size=256 * 1024)
    auth.install(app, tokens)
    audit.install(app, audit_sink if audit_sink is not None else audit.MemorySink())
    app[DISTRIBUTOR] = distributor
    app[SUBMIT] = submit
    app[METRICS] = metrics_
    app[HEALTH] = health
    api.install(app)
    return app
