"""HTTP routes of the centre's configuration: queues, call takers, agencies, priority numbers.

Reads (admin, supervisor, ops; the agency list also for takers) answer from
the record in force (``CentreKeeper.record``), so they work with PostgreSQL
down. Writes (admin only) go through ``CentreKeeper.edit``: PostgreSQL first
(versions checked, the cores' rules applied), then the cores, through the
consumer's inbox. A write answers with the item as written, new version
included; the core applies it within a consumer step.

- ``POST`` creates an item (its fields without ``version``; 409 if the key exists).
- ``PATCH`` replaces the top-level fields it names and must carry the
  ``version`` it read (a nested object such as ``overflow`` is given whole).
- ``DELETE`` takes ``?version=N``.
- ``PUT /api/queues`` replaces the list; each queue may carry its version
  (checked when given).

Every route is declared on ``api`` (``adapters.routes``), so the body, the
query and the roles are checked before the handler runs and the route is in
the OpenAPI document. Every error is a problem (``adapters.problems``): 404
no such item, 409 stale version or refused by the centre's state (a queue
with callers), 422 invalid (unknown keys with their path, or a core's rule
broken), 503 PostgreSQL unavailable (nothing changed).

This adapter never imports the service; it hands changes to the cores through
the ``submit`` the keeper was given.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ..adapters import routes
from ..adapters.http import DISTRIBUTOR
from ..adapters.problems import FieldError, Problem, from_validation
from ..config import QueueSettings, TakerSettings
from ._keeper import CentreKeeper
from ._record import (
    AgencyFields,
    AgencyItem,
    CentreRecord,
    Conflict,
    Edit,
    Invalid,
    NotFound,
    PriorityNumberItem,
    PriorityNumberSettings,
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
    caller = routes.caller(request)
    log.info(
        "config.changed",
        action=action,
        target=target,
        who=caller.who,
        role=caller.role,
        before=before,
        after=after,
    )


# ---- the models of the routes ------------------------------------------------

READERS = ("admin", "supervisor", "ops")
WRITERS = ("admin",)
_STRICT = ConfigDict(extra="forbid")


def _unset(schema: dict[str, Any]) -> None:
    """A PATCH field left out is left as it is: it has no default to show."""
    schema.pop("default", None)


def _patch_of(item: type[BaseModel], name: str) -> type[BaseModel]:
    """The body of a PATCH on ``item``: ``version`` (required) and any of the item's
    other fields, each with its own type and constraints, nothing else. The
    handler merges the fields given into the item and validates the result as
    ``item``, so a field may be omitted but not set to ``null`` unless it is nullable."""
    fields: dict[str, Any] = {
        "version": (int, Field(ge=1, description="The version you read")),
    }
    for key, f in item.model_fields.items():
        if key != "version":
            typ = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
            fields[key] = (typ, Field(None, description=f.description, json_schema_extra=_unset))
    doc = f"Any fields of a {item.__name__} to replace, and the version they replace."
    model: type[BaseModel] = create_model(name, __config__=_STRICT, __doc__=doc, **fields)
    return model


QueuePatch = _patch_of(QueueItem, "QueuePatch")
TakerPatch = _patch_of(TakerItem, "TakerPatch")
AgencyPatch = _patch_of(AgencyItem, "AgencyPatch")
PriorityNumberPatch = _patch_of(PriorityNumberItem, "PriorityNumberPatch")


class QueuesBody(BaseModel):
    """The whole list of queues; a queue that carries its ``version`` is checked against it."""

    model_config = _STRICT
    queues: list[QueueItem] = Field(min_length=1)


class VersionQuery(BaseModel):
    model_config = _STRICT
    version: int = Field(ge=1, description="The version you read")


class QueueList(BaseModel):
    queues: list[QueueItem]


class TakerList(BaseModel):
    takers: list[TakerItem]


class AgencyList(BaseModel):
    agencies: list[AgencyItem]


class PriorityNumberList(BaseModel):
    priority_numbers: list[PriorityNumberItem]


class Deleted(BaseModel):
    deleted: str
    after_call: bool | None = Field(
        None, description="Call takers only: on a call now, they leave when it ends"
    )


api = routes.RouteTable("centre configuration")
# What a route may answer besides what its declaration implies (401/403, 422, 400/413).
_LIST: dict[str, Any] = {"roles": READERS}
_READ: dict[str, Any] = {"roles": READERS, "problems": (404,)}
_CREATE: dict[str, Any] = {"roles": WRITERS, "problems": (409, 503)}  # no item to miss
_WRITE: dict[str, Any] = {"roles": WRITERS, "problems": (404, 409, 503)}
_AGENCY_READERS = (*READERS, "taker")  # takers choose whom to conference in


# ---- helpers -----------------------------------------------------------------

View = Callable[[CentreRecord], Any]


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
    except ValidationError as exc:  # a PATCH whose merged item is not valid
        raise from_validation(exc, "body") from None
    except NotFound as exc:
        raise Problem(404, str(exc)) from None
    except (Stale, Conflict) as exc:
        raise Problem(409, str(exc)) from None
    except Invalid as exc:
        raise Problem(422, f"invalid configuration: {exc}") from None
    except StoreUnavailable as exc:
        raise Problem(503, f"configuration not changed: {exc}") from None
    await audit_change(request, action, target, view(before), view(after))
    body = view(after)
    if extra is not None:
        body = (body or {}) | extra(before)
    return web.json_response(body, status=status)


def _patch(request: web.Request, model: type[BaseModel]) -> dict[str, Any]:
    """The fields a PATCH names (``version`` included), as JSON."""
    return routes.body(request, model).model_dump(mode="json", exclude_unset=True)


def _version(request: web.Request) -> int:
    return routes.query(request, VersionQuery).version


def _refuse_fixed_agencies(request: web.Request) -> None:
    if request.app[KEEPER].record.agencies_fixed:
        raise Problem(409, "agencies come from the settings (agencies_from_database = false)")


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


@api.get("/api/queues", summary="The queues in force, in order", response=QueueList, **_LIST)
async def list_queues(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response({"queues": [record.queue_json(n) for n in record.queues]})


@api.put(
    "/api/queues",
    summary="Replace the list of queues, live",
    description="Queues left out are removed (409 if one has callers).",
    body=QueuesBody,
    response=QueueList,
    **_CREATE,
    audited=("queues.replace", "queues"),
)
async def put_queues(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, QueuesBody)

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


@api.post(
    "/api/queues",
    summary="Create a queue",
    body=QueueSettings,
    response=QueueItem,
    status=201,
    **_CREATE,
    audited=("queue.create", "queues"),
)
async def create_queue(request: web.Request) -> web.StreamResponse:
    item = QueueItem.model_validate(routes.body(request, QueueSettings).model_dump())

    def edit(r: CentreRecord) -> CentreRecord:
        if item.name in r.queues:
            raise Conflict(f"queue {item.name!r} exists; change it with PATCH")
        return r.with_queue(item)

    return await _write(
        request, "queue.create", f"queue:{item.name}", edit, _queue_view(item.name), status=201
    )


@api.get("/api/queues/{name}", summary="One queue", response=QueueItem, **_READ)
async def get_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    record = request.app[KEEPER].record
    if name not in record.queues:
        raise Problem(404, f"no queue {name!r}")
    return web.json_response(record.queue_json(name))


@api.patch(
    "/api/queues/{name}",
    summary="Change a queue's fields, live",
    body=QueuePatch,
    response=QueueItem,
    **_WRITE,
    audited=("queue.update", "queue:{name}"),
)
async def patch_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    patch = _patch(request, QueuePatch)

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.queue_view(name) if name in r.queues else None
        item = _patched(QueueItem, current, patch, "name", f"queue {name!r}")
        expect(current, item.version, f"queue {name!r}")
        return r.with_queue(item)

    return await _write(request, "queue.update", f"queue:{name}", edit, _queue_view(name))


@api.delete(
    "/api/queues/{name}",
    summary="Remove a queue (refused while it has callers)",
    query=VersionQuery,
    response=Deleted,
    **_WRITE,
    audited=("queue.delete", "queue:{name}"),
)
async def delete_queue(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    version = _version(request)

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


@api.get(
    "/api/queues/{name}/priority-numbers",
    summary="A queue's priority numbers",
    response=PriorityNumberList,
    **_READ,
)
async def list_numbers(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    record = request.app[KEEPER].record
    if name not in record.queues:
        raise Problem(404, f"no queue {name!r}")
    items = [
        p.model_dump(mode="json") for (q, _), p in record.priority_numbers.items() if q == name
    ]
    return web.json_response({"priority_numbers": items})


@api.get(
    "/api/queues/{name}/priority-numbers/{number}",
    summary="One priority number of a queue",
    response=PriorityNumberItem,
    **_READ,
)
async def get_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    got = _number_view(name, number)(request.app[KEEPER].record)
    if got is None:
        raise Problem(404, f"no priority number {number!r} in queue {name!r}")
    return web.json_response(got)


@api.post(
    "/api/queues/{name}/priority-numbers",
    summary="Serve a caller number ahead of others in a queue",
    body=PriorityNumberSettings,
    response=PriorityNumberItem,
    status=201,
    **_WRITE,
    audited=("priority_number.create", "priority_number:{name}"),
)
async def create_number(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    given = routes.body(request, PriorityNumberSettings)
    item = PriorityNumberItem.model_validate(given.model_dump() | {"queue": name})

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


@api.patch(
    "/api/queues/{name}/priority-numbers/{number}",
    summary="Change a priority number's priority or label",
    body=PriorityNumberPatch,
    response=PriorityNumberItem,
    **_WRITE,
    audited=("priority_number.update", "priority_number:{name}/{number}"),
)
async def patch_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    patch = _patch(request, PriorityNumberPatch)
    if "queue" in patch and patch["queue"] != name:
        raise Problem(
            422,
            "the request is not valid",
            errors=[
                FieldError(
                    in_="body", field="queue", message="a priority number cannot change queue"
                )
            ],
        )

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.priority_numbers.get((name, number))
        what = f"priority number {number!r} in queue {name!r}"
        item = _patched(PriorityNumberItem, current, patch, "number", what)
        expect(current, item.version, what)
        return r.with_priority_number(item)

    target = f"priority_number:{name}/{number}"
    return await _write(request, "priority_number.update", target, edit, _number_view(name, number))


@api.delete(
    "/api/queues/{name}/priority-numbers/{number}",
    summary="Remove a priority number",
    query=VersionQuery,
    response=Deleted,
    **_WRITE,
    audited=("priority_number.delete", "priority_number:{name}/{number}"),
)
async def delete_number(request: web.Request) -> web.StreamResponse:
    name, number = request.match_info["name"], request.match_info["number"]
    version = _version(request)

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


@api.get("/api/takers", summary="The call takers, in order", response=TakerList, **_LIST)
async def list_takers(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response(
        {"takers": [t.model_dump(mode="json") for t in record.takers.values()]}
    )


@api.get("/api/takers/{taker_id}", summary="One call taker", response=TakerItem, **_READ)
async def get_taker(request: web.Request) -> web.StreamResponse:
    taker_id = request.match_info["taker_id"]
    got = _taker_view(taker_id)(request.app[KEEPER].record)
    if got is None:
        raise Problem(404, f"no call taker {taker_id!r}")
    return web.json_response(got)


@api.post(
    "/api/takers",
    summary="Add a call taker, available at once",
    body=TakerSettings,
    response=TakerItem,
    status=201,
    **_CREATE,
    audited=("taker.create", "takers"),
)
async def create_taker(request: web.Request) -> web.StreamResponse:
    item = TakerItem.model_validate(routes.body(request, TakerSettings).model_dump())

    def edit(r: CentreRecord) -> CentreRecord:
        if item.id in r.takers:
            raise Conflict(f"call taker {item.id!r} exists; change them with PATCH")
        return r.with_taker(item)

    return await _write(
        request, "taker.create", f"taker:{item.id}", edit, _taker_view(item.id), status=201
    )


@api.patch(
    "/api/takers/{taker_id}",
    summary="Change a call taker's handset, queues or start state",
    body=TakerPatch,
    response=TakerItem,
    **_WRITE,
    audited=("taker.update", "taker:{taker_id}"),
)
async def patch_taker(request: web.Request) -> web.StreamResponse:
    taker_id = request.match_info["taker_id"]
    patch = _patch(request, TakerPatch)

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.takers.get(taker_id)
        item = _patched(TakerItem, current, patch, "id", f"call taker {taker_id!r}")
        expect(current, item.version, f"call taker {taker_id!r}")
        return r.with_taker(item)

    return await _write(request, "taker.update", f"taker:{taker_id}", edit, _taker_view(taker_id))


def _taker_status(request: web.Request, taker_id: str) -> str:
    snap = request.app[DISTRIBUTOR].snapshot(time.time())
    return next((str(t["status"]) for t in snap["takers"] if t["id"] == taker_id), "offline")


@api.delete(
    "/api/takers/{taker_id}",
    summary="Remove a call taker (one on a call leaves when it ends)",
    query=VersionQuery,
    response=Deleted,
    **_WRITE,
    audited=("taker.delete", "taker:{taker_id}"),
)
async def delete_taker(request: web.Request) -> web.StreamResponse:
    """A taker on a call stays on it: the core logs them out and forgets them
    when the call ends (``Distributor._config_changed``); a ring to them is
    cancelled and the caller offered to the next taker. No caller is dropped."""
    taker_id = request.match_info["taker_id"]
    version = _version(request)

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


@api.get(
    "/api/agencies",
    summary="The agencies, with their dispatcher handsets",
    roles=_AGENCY_READERS,
    response=AgencyList,
)
async def list_agencies(request: web.Request) -> web.StreamResponse:
    record = request.app[KEEPER].record
    return web.json_response(
        {"agencies": [a.model_dump(mode="json") for a in record.agencies.values()]}
    )


@api.get(
    "/api/agencies/{code}",
    summary="One agency",
    roles=_AGENCY_READERS,
    response=AgencyItem,
    problems=(404,),
)
async def get_agency(request: web.Request) -> web.StreamResponse:
    code = request.match_info["code"]
    got = _agency_view(code)(request.app[KEEPER].record)
    if got is None:
        raise Problem(404, f"no agency {code!r}")
    return web.json_response(got)


@api.post(
    "/api/agencies",
    summary="Add an agency",
    description="409 also when the agencies come from the settings"
    " (agencies_from_database = false).",
    body=AgencyFields,
    response=AgencyItem,
    status=201,
    **_CREATE,
    audited=("agency.create", "agencies"),
)
async def create_agency(request: web.Request) -> web.StreamResponse:
    _refuse_fixed_agencies(request)
    item = AgencyItem.model_validate(routes.body(request, AgencyFields).model_dump())

    def edit(r: CentreRecord) -> CentreRecord:
        if item.code in r.agencies:
            raise Conflict(f"agency {item.code!r} exists; change it with PATCH")
        return r.with_agency(item)

    return await _write(
        request, "agency.create", f"agency:{item.code}", edit, _agency_view(item.code), status=201
    )


@api.patch(
    "/api/agencies/{code}",
    summary="Change an agency, its dispatcher handsets included, live",
    body=AgencyPatch,
    response=AgencyItem,
    **_WRITE,
    audited=("agency.update", "agency:{code}"),
)
async def patch_agency(request: web.Request) -> web.StreamResponse:
    _refuse_fixed_agencies(request)
    code = request.match_info["code"]
    patch = _patch(request, AgencyPatch)

    def edit(r: CentreRecord) -> CentreRecord:
        current = r.agencies.get(code)
        item = _patched(AgencyItem, current, patch, "code", f"agency {code!r}")
        expect(current, item.version, f"agency {code!r}")
        return r.with_agency(item)

    return await _write(request, "agency.update", f"agency:{code}", edit, _agency_view(code))


@api.delete(
    "/api/agencies/{code}",
    summary="Remove an agency (calls keep the dispatchers they have)",
    query=VersionQuery,
    response=Deleted,
    **_WRITE,
    audited=("agency.delete", "agency:{code}"),
)
async def delete_agency(request: web.Request) -> web.StreamResponse:
    """Calls with this agency's dispatchers on them keep them (``DirectoryChanged``)."""
    _refuse_fixed_agencies(request)
    code = request.match_info["code"]
    version = _version(request)

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
    api.install(app)
