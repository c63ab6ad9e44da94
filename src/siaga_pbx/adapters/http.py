"""The service's own HTTP API: health, metrics, live state, taker and queue control.

Every request to /api needs a bearer token; the token's role decides what it
may do. Input is validated with pydantic; bad input gets a 4xx with a message
per field, never a 500. Changes go to the consumer's inbox as core events, so
the API never touches the core's state directly (reading a snapshot is fine:
it runs on the same event loop, between two consumer steps).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import core
from ..config import QueueSettings
from ..service import ApiRequest, CallService
from .metrics import Metrics

Role = Literal["admin", "supervisor", "taker", "ops"]
SERVICE: web.AppKey[CallService] = web.AppKey("service", CallService)
METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
TOKENS: web.AppKey[Mapping[str, str]] = web.AppKey("tokens", Mapping)
HEALTH: web.AppKey[Callable[[], dict[str, Any]]] = web.AppKey("health", object)  # type: ignore[arg-type]
CENTRE: web.AppKey[dict[str, core.CentreConfig]] = web.AppKey("centre", dict)

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
            auth = request.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else ""
            role = request.app[TOKENS].get(token) if token else None
            if role is None:
                return error(401, "missing or unknown bearer token")
            if role not in roles:
                return error(403, f"role {role!r} may not do this")
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
    return web.json_response(request.app[SERVICE].distributor.snapshot(time.time()))


@require("admin", "supervisor", "taker")
async def taker_action(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE]
    taker_id = request.match_info["taker_id"]
    known = {t.taker_id for t in request.app[CENTRE]["current"].takers}
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
    service.submit(ApiRequest(event))
    return web.json_response({"accepted": action, "taker_id": taker_id}, status=202)


@require("admin", "supervisor", "ops")
async def get_queues(request: web.Request) -> web.StreamResponse:
    centre = request.app[CENTRE]["current"]
    return web.json_response({"queues": [_queue_json(q) for q in centre.queues]})


@require("admin")
async def put_queues(request: web.Request) -> web.StreamResponse:
    raw = await read_json(request)
    try:
        body = QueuesBody.model_validate(raw)
        current = request.app[CENTRE]["current"]
        centre = core.CentreConfig(
            queues=tuple(q.to_core() for q in body.queues),
            takers=current.takers,
            default_queue=current.default_queue,
        )
    except ValidationError as exc:
        return validation_error(exc)
    except ValueError as exc:
        return error(422, f"invalid configuration: {exc}")
    request.app[CENTRE]["current"] = centre
    request.app[SERVICE].submit(ApiRequest(core.ConfigChanged(centre)))
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
    service: CallService,
    metrics_: Metrics,
    tokens: Mapping[str, str],
    centre: core.CentreConfig,
    health: Callable[[], dict[str, Any]],
) -> web.Application:
    app = web.Application(client_max_size=256 * 1024)
    app[SERVICE] = service
    app[METRICS] = metrics_
    app[TOKENS] = tokens
    app[HEALTH] = health
    app[CENTRE] = {"current": centre}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/state", state)
    app.router.add_post("/api/takers/{taker_id}/{action}", taker_action)
    app.router.add_get("/api/queues", get_queues)
    app.router.add_put("/api/queues", put_queues)
    return app
