"""The service's own HTTP API: health, metrics, live state, taker and queue control.

Every request to /api needs a bearer token (``siaga_pbx.auth``, the one auth
path); the token's role decides what it may do. Input is validated with
pydantic; bad input gets a 4xx with a message per field, never a 500.

This adapter never imports the service. It reads the distribution core
(snapshots, the configuration in force, and ``check`` to refuse a request
the core would refuse, with the core's own message) and hands changes to
the consumer's inbox through ``submit``, so the API never changes the core's
state itself. Reading runs on the same event loop, between two consumer steps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import auth, conference, core
from ..config import QueueSettings
from .metrics import Metrics

Role = Literal["admin", "supervisor", "taker", "ops"]
Submit = Callable[[core.Event | conference.Event], None]
DISTRIBUTOR: web.AppKey[core.Distributor] = web.AppKey("distributor", core.Distributor)
SUBMIT: web.AppKey[Submit] = web.AppKey("submit", object)  # type: ignore[arg-type]
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, fields: Mapping[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = dict(fields)
    return web.json_response(body, status=status)


def require(*roles: Role) -> Callable[[Handler], Handler]:
    """Decorator: the request must carry a token whose role is one of ``roles``."""

    def wrap(handler: Handler) -> Handler:
        async def checked(request: web.Request) -> web.StreamResponse:
            try:
                auth.authorize(request, roles)
            except auth.AuthError as exc:
                response = error(exc.status, exc.message)
                response.headers.update(exc.headers)
                return response
            return await handler(request)

        return checked

    return wrap


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd nesting
        raise web.HTTPBadRequest(
            text=json.dumps({"error": f"body is not valid JSON: {exc}"}),
            content_type="application/json",
        ) from None


def validation_error(exc: ValidationError) -> web.Response:
    fields = {".".join(str(p) for p in e["loc"]) or "(body)": e["msg"] for e in exc.errors()}
    return error(422, "invalid request", fields)


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("break", min_length=1, max_length=64, pattern=r"^[\w .-]+$")


class QueuesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queues: list[QueueSettings] = Field(min_length=1)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response(request.app[HEALTH]())


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@require("admin", "supervisor", "taker", "ops")
async def state(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[DISTRIBUTOR].snapshot(time.time()))


@require("admin", "supervisor", "taker")
async def taker_action(request: web.Request) -> web.StreamResponse:
    distributor = request.app[DISTRIBUTOR]
    taker_id = request.match_info["taker_id"]
    known = {t.taker_id for t in distributor.config.takers}
    if taker_id not in known:
        return error(404, f"no call taker {taker_id!r}")
    action = request.match_info["action"]
    event: core.Event
    if action == "login":
        event = core.TakerLoggedIn(taker_id)
    elif action == "logout":
        event = core.TakerLoggedOut(taker_id)
    elif action == "unpause":
        event = core.TakerUnpaused(taker_id)
    elif action == "pause":
        raw = await read_json(request) if request.can_read_body else {}
        try:
            body = PauseBody.model_validate(raw)
        except ValidationError as exc:
            return validation_error(exc)
        event = core.TakerPaused(taker_id, reason=body.reason)
    else:
        return error(404, f"unknown action {action!r}")
    try:
        distributor.check(event)  # refused now, with the core's reason, not after a 202
    except core.RemoteProtocolError as exc:
        return error(409, str(exc))
    request.app[SUBMIT](event)
    return web.json_response({"accepted": action, "taker_id": taker_id}, status=202)


@require("admin", "supervisor", "ops")
async def get_queues(request: web.Request) -> web.StreamResponse:
    centre = request.app[DISTRIBUTOR].config
    return web.json_response({"queues": [_queue_json(q) for q in centre.queues]})


@require("admin")
async def put_queues(request: web.Request) -> web.StreamResponse:
    raw = await read_json(request)
    try:
        body = QueuesBody.model_validate(raw)
        current = request.app[DISTRIBUTOR].config
        centre = core.CentreConfig(
            queues=tuple(q.to_core() for q in body.queues),
            takers=current.takers,
            default_queue=current.default_queue,
        )
    except ValidationError as exc:
        return validation_error(exc)
    except ValueError as exc:
        return error(422, f"invalid configuration: {exc}")
    request.app[SUBMIT](core.ConfigChanged(centre))
    return web.json_response({"queues": [_queue_json(q) for q in centre.queues]}, status=202)


def _queue_json(q: core.QueueConfig) -> dict[str, Any]:
    return {
        "name": q.name,
        "strategy": q.strategy.value,
        "ring_timeout_s": q.ring_timeout_s,
        "retry_delay_s": q.retry_delay_s,
        "wrapup_s": q.wrapup_s,
        "max_misses": q.max_misses,
        "overflow": {
            "after_s": q.overflow.after_s,
            "queue": q.overflow.queue,
            "dial": q.overflow.dial,
            "when_no_takers": q.overflow.when_no_takers,
        },
        "hold": q.hold.value,
        "reassurance_every_s": q.reassurance_every_s,
        "announce_position": q.announce_position,
        "requeue_dropped_at_head": q.requeue_dropped_at_head,
        "requeue_on_taker_hangup": q.requeue_on_taker_hangup,
    }


def make_app(
    *,
    distributor: core.Distributor,
    submit: Submit,
    metrics_: Metrics,
    tokens: Mapping[str, str],
    health: Callable[[], dict[str, Any]],
) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    auth.install(app, tokens)
    app[DISTRIBUTOR] = distributor
    app[SUBMIT] = submit
    app[METRICS] = metrics_
    app[HEALTH] = health
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/takers/{taker_id}/{action}", taker_action)
    app.router.add_get("/api/queues", get_queues)
    app.router.add_put("/api/queues", put_queues)
    return app
