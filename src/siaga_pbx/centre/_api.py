"""HTTP routes of the centre's configuration: queues, call takers, agencies, priority numbers.

Reads (admin, supervisor, ops; the agency list also for takers) answer from
the record in force (``CentreKeeper.record``), so they work with PostgreSQL
down. Writes (admin only) go through ``CentreKeeper.edit``: PostgreSQL first
(versions checked, the cores' rules applied), then the cores, through the
consumer's inbox. A write answers with the item as written, new version
included; the core applies it within a consumer step.

- ``POST`` creates an item (no ``version``; 409 if the key exists).
- ``PATCH`` replaces the top-level fields it names and must carry the
  ``version`` it read (a nested object such as ``overflow`` is given whole).
- ``DELETE`` takes ``?version=N``.
- ``PUT /api/queues`` replaces the list; each queue may carry its version
  (checked when given).

Statuses: 404 no such item, 409 stale version or refused by the centre's
state (a queue with callers), 422 invalid (unknown keys with their path, or a
core's rule broken), 503 PostgreSQL unavailable (nothing changed).

This adapter never imports the service; it hands changes to the cores through
the ``submit`` the keeper was given.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import auth
from ..adapters.http import DISTRIBUTOR, Role, error, read_json, require, validation_error
from ._keeper import CentreKeeper
from ._record import (
    AgencyItem,
    CentreRecord,
    Conflict,
    Edit,
    Invalid,
    NotFound,
    PriorityNumberItem,
    QueueItem,
    Stale,
    TakerItem,
    expect,
    merged,
)
from ._store import StoreUnavailable

log = structlog.get_logger(__name__)

KEEPER: web.AppKey[CentreKeeper] = web.AppKey("centre_keeper", CentreKeeper)

# ---- the audit seam ----------------------------------------------------------

AuditSink = Callable[[web.Request, str, str, Any, Any], Awaitable[None]]
AUDIT: web.AppKey[AuditSink] = web.AppKey("centre_audit", object)  # type: ignore[arg-type]


async def audit_change(
    request: web.Request, action: str, target: str, before: Any, after: Any
) -> None:
    """Record who changed what (``before``/``after``: the item's JSON, ``None``
    when it did not exist / no longer exists). The audit table's writer plugs
    in as ``app[AUDIT]``; until then this is a structured log line."""
    sink = request.app.get(AUDIT)
    if sink is not None:
        await sink(request, action, target, before, after)
        return
    caller = auth.authenticate(request)
    log.info(
        "config.changed",
        action=action,
        target=target,
        who=caller.who,
        role=caller.role,
        before=before,
        after=after,
    )


# ---- helpers -----------------------------------------------------------------

READERS: tuple[Role, ...] = ("admin", "supervisor", "ops")
View = Callable[[CentreRecord], Any]


class QueuesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queues: list[QueueItem] = Field(min_length=1)


def _queue_view(name: str) -> View:
    return lambda r: r.queue_json(name) if name in r.queues else None


def _taker_view(taker_id: str) -> View:
    return lambda r: r.takers[taker_id].model_dump(mode="json") if taker_id in r.takers else None


def _agency_view(code: str) -> View:
    return lambda r: r.agencies[code].model_dump(mode="json") if code in r.agencies else None


def _number_view(queue: str, number: str) -> View:
    key = (queue, number)
    return lambda r: (
        r.priority_numbers[key].model_dump(mode="json") if key in r.priority_numbers else None
    )


async def _write(
    request: web.Request,
    action: str,
    target: str,
    edit: Edit,
    view: View,
    *,
    status: int = 200,
    extra: Callable[[CentreRecord], dict[str, Any]] | None = None,
) -> web.Response:
    try:
        before, after = await request.app[KEEPER].edit(edit)
    except ValidationError as exc:
        return validation_error(exc)
    except NotFound as exc:
        return error(404, str(exc))
    except (Stale, Conflict) as exc:
        return error(409, str(exc))
    except Invalid as exc:
        return error(422, f"invalid configuration: {exc}")
    except StoreUnavailable as exc:
        return error(503, f"configuration not changed: {exc}")
    await audit_change(request, action, target, view(before), view(after))
    body = view(after)
    if extra is not None:
        body = (body or {}) | extra(before)
    return web.json_response(body, status=status)


async def _object_body(request: web.Request) -> dict[str, Any] | web.Response:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        return error(422, "invalid request", {"(body)": "must be a JSON object"})
    return raw


def _patch_version(body: dict[str, Any]) -> web.Response | None:
    if "version" not in body:
        return error(422, "invalid request", {"version": "Field required: the version you read"})
    return None


def _query_version(request: web.Request) -> int | web.Response:
    raw = request.query.get("version", "")
    if not raw.isdigit() or int(raw) < 1:
        return error(422, "invalid request", {"version": "?version=N (the version you read)"})
    return int(raw)


def _fixed_agencies(request: web.Request) -> web.Response | None:
    if request.app[KEEPER].record.agencies_fixed:
        return error(409, "agencies come from the settings (agencies_from_database = false)")
    return None


M = TypeVar("M", bound=BaseModel)


def _patched(
    model: type[M], current: BaseModel | None, patch: dict[str, Any], key: str, what: str
) -> M:
    if current is None:
        raise NotFound(f"no {what}")
    return model.model_validate(merged(current, patch, key))


def _queue_callers(request: web.Request, name: str) -> tuple[int, int]:
    snap = request.app[DISTRIBUTOR].snapshot(time.time())
    for q in snap["queues"]:
        if q["name"] == name:
            return len(q["waiting"]), len(q["connected"])
    return 0, 0


def _refuse_busy_removals(request: web.Request, before: CentreRecord, after: CentreRecord) -> None:
    """A queue with callers (waiting, ringing or connected) is never removed."""
    for name in before.queues.keys() - after.queues.keys():
        waiting, connected = _queue_callers(request, name)
        if waiting or connected:
            raise Conflict(
                f"queue {name!r} has {waiting} waiting and {connected} connected callers;"
                " it can be removed once they are served"
            )


# ---- queues ------------------------------------------------------------------


@require(*READERS)
async def list_queues(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response({"queues": [record.queue_json(n) for n in record.queues]})


@require("admin")
async def put_queues(request: web.Request) -> web.StreamResponse:
    try:
        body = QueuesBody.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)

    def edit(r: CentreRecord) -> CentreRecord:
        new = r.with_queues(body.queues)
        _refuse_busy_removals(request, r, new)
        return new

    return await _write(
        request,
        "queues.replace",
        "queues",
        edit,
        lambda r: {"queues": [r.queue_json(n) for n in r.queues]},
    )


@require(*READERS)
async def get_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    record = request.app[KEEPER].record
    if name not in record.queues:
        return error(404, f"no queue {name!r}")
    return web.json_response(record.queue_json(name))


@require("admin")
async def create_queue(request: web.Request) -> web.StreamResponse:
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        item = QueueItem.model_validate(body | {"version": 1})
    except ValidationError as exc:
        return validation_error(exc)

    def edit(r: CentreRecord) -> CentreRecord:
        if item.name in r.queues:
            raise Conflict(f"queue {item.name!r} exists; change it with PATCH")
        return r.with_queue(item)

    return await _write(
        request, "queue.create", f"queue:{item.name}", edit, _queue_view(item.name), status=201
    )


@require("admin")
async def patch_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    if (refused := _patch_version(body)) is not None:
        return refused

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.queue_view(name) if name in r.queues else None
        item = _patched(QueueItem, current, body, "name", f"queue {name!r}")
        expect(current, item.version, f"queue {name!r}")
        return r.with_queue(item)

    return await _write(request, "queue.update", f"queue:{name}", edit, _queue_view(name))


@require("admin")
async def delete_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    version = _query_version(request)
    if isinstance(version, web.Response):
        return version

    def edit(r: CentreRecord) -> CentreRecord:
        expect(r.queues.get(name), version, f"queue {name!r}")
        new = r.without_queue(name)
        _refuse_busy_removals(request, r, new)
        return new

    return await _write(
        request,
        "queue.delete",
        f"queue:{name}",
        edit,
        _queue_view(name),
        extra=lambda _: {"deleted": name},
    )


# ---- priority numbers (per queue) ----------------------------------------------


class NewPriorityNumber(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: str
    priority: int
    label: str = ""


@require(*READERS)
async def list_numbers(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    record = request.app[KEEPER].record
    if name not in record.queues:
        return error(404, f"no queue {name!r}")
    items = [
        p.model_dump(mode="json") for (q, _), p in record.priority_numbers.items() if q == name
    ]
    return web.json_response({"priority_numbers": items})


@require(*READERS)
async def get_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    got = _number_view(name, number)(request.app[KEEPER].record)
    if got is None:
        return error(404, f"no priority number {number!r} in queue {name!r}")
    return web.json_response(got)


@require("admin")
async def create_number(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        item = PriorityNumberItem.model_validate(
            NewPriorityNumber.model_validate(body).model_dump() | {"queue": name, "version": 1}
        )
    except ValidationError as exc:
        return validation_error(exc)

    def edit(r: CentreRecord) -> CentreRecord:
        if name not in r.queues:
            raise NotFound(f"no queue {name!r}")
        if (name, item.number) in r.priority_numbers:
            raise Conflict(f"number {item.number!r} is already a priority number of {name!r}")
        return r.with_priority_number(item)

    target = f"priority_number:{name}/{item.number}"
    return await _write(
        request, "priority_number.create", target, edit, _number_view(name, item.number), status=201
    )


@require("admin")
async def patch_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    if (refused := _patch_version(body)) is not None:
        return refused
    if "queue" in body and body["queue"] != name:
        return error(422, "invalid request", {"queue": "a priority number cannot change queue"})

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.priority_numbers.get((name, number))
        what = f"priority number {number!r} in queue {name!r}"
        item = _patched(PriorityNumberItem, current, body, "number", what)
        expect(current, item.version, what)
        return r.with_priority_number(item)

    target = f"priority_number:{name}/{number}"
    return await _write(request, "priority_number.update", target, edit, _number_view(name, number))


@require("admin")
async def delete_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    version = _query_version(request)
    if isinstance(version, web.Response):
        return version

    def edit(r: CentreRecord) -> CentreRecord:
        expect(r.priority_numbers.get((name, number)), version, f"priority number {number!r}")
        return r.without_priority_number(name, number)

    target = f"priority_number:{name}/{number}"
    return await _write(
        request,
        "priority_number.delete",
        target,
        edit,
        _number_view(name, number),
        extra=lambda _: {"deleted": number},
    )


# ---- call takers ---------------------------------------------------------------


@require(*READERS)
async def list_takers(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response(
        {"takers": [t.model_dump(mode="json") for t in record.takers.values()]}
    )


@require(*READERS)
async def get_taker(request: web.Request) -> web.StreamResponse:
    taker_id = request.match_info["taker_id"]
    got = _taker_view(taker_id)(request.app[KEEPER].record)
    if got is None:
        return error(404, f"no call taker {taker_id!r}")
    return web.json_response(got)


@require("admin")
async def create_taker(request: web.Request) -> web.StreamResponse:
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        item = TakerItem.model_validate(body | {"version": 1})
    except ValidationError as exc:
        return validation_error(exc)

    def edit(r: CentreRecord) -> CentreRecord:
        if item.id in r.takers:
            raise Conflict(f"call taker {item.id!r} exists; change them with PATCH")
        return r.with_taker(item)

    return await _write(
        request, "taker.create", f"taker:{item.id}", edit, _taker_view(item.id), status=201
    )


@require("admin")
async def patch_taker(request: web.Request) -> web.StreamResponse:
    taker_id = request.match_info["taker_id"]
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    if (refused := _patch_version(body)) is not None:
        return refused

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.takers.get(taker_id)
        item = _patched(TakerItem, current, body, "id", f"call taker {taker_id!r}")
        expect(current, item.version, f"call taker {taker_id!r}")
        return r.with_taker(item)

    return await _write(request, "taker.update", f"taker:{taker_id}", edit, _taker_view(taker_id))


def _taker_status(request: web.Request, taker_id: str) -> str:
    snap = request.app[DISTRIBUTOR].snapshot(time.time())
    return next((str(t["status"]) for t in snap["takers"] if t["id"] == taker_id), "offline")


@require("admin")
async def delete_taker(request: web.Request) -> web.StreamResponse:
    """A taker on a call stays on it: the core logs them out and forgets them
    when the call ends (``Distributor._config_changed``); a ring to them is
    cancelled and the caller offered to the next taker. No caller is dropped."""
    taker_id = request.match_info["taker_id"]
    version = _query_version(request)
    if isinstance(version, web.Response):
        return version

    def edit(r: CentreRecord) -> CentreRecord:
        expect(r.takers.get(taker_id), version, f"call taker {taker_id!r}")
        return r.without_taker(taker_id)

    on_call = _taker_status(request, taker_id) == "on_call"
    return await _write(
        request,
        "taker.delete",
        f"taker:{taker_id}",
        edit,
        _taker_view(taker_id),
        extra=lambda _: {"deleted": taker_id, "after_call": on_call},
    )


# ---- agencies ------------------------------------------------------------------


@require(*READERS, "taker")  # takers choose whom to conference in
async def list_agencies(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response(
        {"agencies": [a.model_dump(mode="json") for a in record.agencies.values()]}
    )


@require(*READERS, "taker")
async def get_agency(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    got = _agency_view(code)(request.app[KEEPER].record)
    if got is None:
        return error(404, f"no agency {code!r}")
    return web.json_response(got)


@require("admin")
async def create_agency(request: web.Request) -> web.StreamResponse:
    if (refused := _fixed_agencies(request)) is not None:
        return refused
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        item = AgencyItem.model_validate(body | {"version": 1})
    except ValidationError as exc:
        return validation_error(exc)

    def edit(r: CentreRecord) -> CentreRecord:
        if item.code in r.agencies:
            raise Conflict(f"agency {item.code!r} exists; change it with PATCH")
        return r.with_agency(item)

    return await _write(
        request, "agency.create", f"agency:{item.code}", edit, _agency_view(item.code), status=201
    )


@require("admin")
async def patch_agency(request: web.Request) -> web.StreamResponse:
    if (refused := _fixed_agencies(request)) is not None:
        return refused
    code = request.match_info["code"]
    body = await _object_body(request)
    if isinstance(body, web.Response):
        return body
    if (refused := _patch_version(body)) is not None:
        return refused

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.agencies.get(code)
        item = _patched(AgencyItem, current, body, "code", f"agency {code!r}")
        expect(current, item.version, f"agency {code!r}")
        return r.with_agency(item)

    return await _write(request, "agency.update", f"agency:{code}", edit, _agency_view(code))


@require("admin")
async def delete_agency(request: web.Request) -> web.StreamResponse:
    """Calls with this agency's dispatchers on them keep them (``DirectoryChanged``)."""
    if (refused := _fixed_agencies(request)) is not None:
        return refused
    code = request.match_info["code"]
    version = _query_version(request)
    if isinstance(version, web.Response):
        return version

    def edit(r: CentreRecord) -> CentreRecord:
        expect(r.agencies.get(code), version, f"agency {code!r}")
        return r.without_agency(code)

    return await _write(
        request,
        "agency.delete",
        f"agency:{code}",
        edit,
        _agency_view(code),
        extra=lambda _: {"deleted": code},
    )


def add_centre_routes(app: web.Application, keeper: CentreKeeper) -> None:
    """Routes of the configuration API on an app of ``adapters.http.make_app``
    (its tokens, roles and distributor)."""
    app[KEEPER] = keeper
    r = app.router
    r.add_get("/api/queues", list_queues)
    r.add_put("/api/queues", put_queues)
    r.add_post("/api/queues", create_queue)
    r.add_get("/api/queues/{name}", get_queue)
    r.add_patch("/api/queues/{name}", patch_queue)
    r.add_delete("/api/queues/{name}", delete_queue)
    r.add_get("/api/queues/{name}/priority-numbers", list_numbers)
    r.add_post("/api/queues/{name}/priority-numbers", create_number)
    r.add_get("/api/queues/{name}/priority-numbers/{number}", get_number)
    r.add_patch("/api/queues/{name}/priority-numbers/{number}", patch_number)
    r.add_delete("/api/queues/{name}/priority-numbers/{number}", delete_number)
    r.add_get("/api/takers", list_takers)
    r.add_post("/api/takers", create_taker)
    r.add_get("/api/takers/{taker_id}", get_taker)
    r.add_patch("/api/takers/{taker_id}", patch_taker)
    r.add_delete("/api/takers/{taker_id}", delete_taker)
    r.add_get("/api/agencies", list_agencies)
    r.add_post("/api/agencies", create_agency)
    r.add_get("/api/agencies/{code}", get_agency)
    r.add_patch("/api/agencies/{code}", patch_agency)
    r.add_delete("/api/agencies/{code}", delete_agency)
