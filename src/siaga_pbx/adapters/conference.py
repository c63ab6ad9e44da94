"""The conference core's adapters: the agency directory and the HTTP API.

- ``AgencyWatcher`` keeps the agency directory fresh from PostgreSQL
  (migration 0004): loads it at start-up and on every NOTIFY, keeps the last
  good copy, and never lets a call wait for the database (the settings' copy
  serves until the database answers).
- ``add_conference_routes``: the HTTP API. Like ``adapters.http`` it never
  imports the service: it reads the conference core (is the call live, is
  the request possible now: ``Conferences.check``) and hands requests to the
  consumer's inbox through ``submit``. The commands themselves run in the
  call's lane (``adapters.telephony``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Literal

import asyncpg
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from .. import audit, conference, core
from . import routes
from .http import SUBMIT, Submit, error

log = structlog.get_logger(__name__)


# ---- the agency directory ------------------------------------------------------

_SELECT = """
SELECT code, name, digit, endpoints, ring_strategy, ring_timeout_s, fallback,
       join_role, mass_incident
FROM agencies WHERE enabled ORDER BY code
"""


async def load_directory(conn: asyncpg.Connection) -> conference.AgencyDirectory:
    """The enabled agencies; a fallback to a disabled agency is dropped."""
    rows = await conn.fetch(_SELECT)
    codes = {r["code"] for r in rows}
    return conference.AgencyDirectory(
        tuple(
            conference.Agency(
                code=r["code"],
                name=r["name"],
                endpoints=tuple(r["endpoints"]),
                digit=r["digit"],
                strategy=conference.RingStrategy(r["ring_strategy"]),
                ring_timeout_s=float(r["ring_timeout_s"]),
                fallback=r["fallback"] if r["fallback"] in codes else "",
                role=conference.Role(r["join_role"]),
                mass_incident=r["mass_incident"],
            )
            for r in rows
        )
    )


class AgencyWatcher:
    """Loads the directory from PostgreSQL now and on every change; never raises.

    ``publish`` receives each new good directory. A directory the database
    holds but the core would refuse is logged and the last good one kept.
    """

    CHANNEL = "siaga_agencies"

    def __init__(
        self,
        dsn: str,
        publish: Callable[[conference.AgencyDirectory], None],
        *,
        retry_s: float = 5.0,
        keepalive_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self._publish = publish
        self._retry_s = retry_s
        self._keepalive_s = keepalive_s
        self.last_good: conference.AgencyDirectory | None = None
        self.loads = 0

    async def run(self) -> None:
        while True:
            try:
                await self._watch()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be down: retry
                log.warning("agencies.db_unavailable", error=str(exc)[:300])
            await asyncio.sleep(self._retry_s)

    async def _watch(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            changed = asyncio.Event()
            await conn.add_listener(self.CHANNEL, lambda *_: changed.set())
            while True:
                self._load_one(await self._fetch(conn))
                while not changed.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout=self._keepalive_s)
                    if not changed.is_set():
                        await conn.execute("SELECT 1")  # raises when the connection is gone
                changed.clear()
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    @staticmethod
    async def _fetch(conn: asyncpg.Connection) -> conference.AgencyDirectory | ValueError:
        try:
            return await load_directory(conn)
        except ValueError as exc:
            return exc

    def _load_one(self, result: conference.AgencyDirectory | ValueError) -> None:
        if isinstance(result, ValueError):
            log.error("agencies.invalid_kept_last_good", error=str(result)[:300])
            return
        if not result.agencies:
            log.error("agencies.empty_kept_last_good")
            return
        self.loads += 1
        if result != self.last_good:
            self.last_good = result
            self._publish(result)
            log.info("agencies.loaded", agencies=[a.code for a in result.agencies])


# ---- HTTP API --------------------------------------------------------------------

CONFERENCES: web.AppKey[conference.Conferences] = web.AppKey("conferences", conference.Conferences)


class AddDispatcherBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agency: str = Field(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_]*$")
    role: conference.Role | None = None


class RoleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["talk", "listen"]


class SuperviseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    supervisor: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    endpoint: str = Field(pattern=conference.ENDPOINT.pattern)
    mode: conference.SuperviseMode


class ConferenceAccepted(BaseModel):
    accepted: Literal[
        "AddAgency",
        "AddMassIncident",
        "RemoveAgency",
        "SetRole",
        "HandOver",
        "Supervise",
        "EndSupervision",
    ]
    call_id: str


api = routes.RouteTable("conference")
_EVERYONE = ("admin", "supervisor", "taker", "ops")
_STAFF = ("admin", "supervisor", "taker")
_SUPERVISORS = ("admin", "supervisor")
# Every request is checked against the conference core before it is queued.
_ASKS: dict[str, object] = {"response": ConferenceAccepted, "status": 202, "problems": (404, 409)}


def _submit(request: web.Request, event: conference.Event) -> web.Response | None:
    """Check the request against the core's state now (4xx), then queue it."""
    confs = request.app[CONFERENCES]
    call_id = request.match_info["call_id"]
    if not confs.is_live(call_id):
        return error(404, f"call {call_id!r} is not live with a call taker")
    agency = getattr(event, "agency", None)
    if agency is not None and confs.directory.get(agency) is None:
        return error(404, f"no agency {agency!r}")
    try:
        confs.check(event)
    except core.RemoteProtocolError as exc:
        return error(409, str(exc))
    request.app[SUBMIT](event)
    return None


def _event_or_error(build: Callable[[], conference.Event]) -> conference.Event | web.Response:
    try:
        return build()
    except ValueError as exc:
        return error(422, f"invalid request: {exc}")


async def _accepted(
    request: web.Request, build: Callable[[], conference.Event]
) -> web.StreamResponse:
    event = _event_or_error(build)
    if isinstance(event, web.Response):
        return event
    refused = _submit(request, event)
    if refused is not None:
        return refused
    return web.json_response(
        {"accepted": type(event).__name__, "call_id": request.match_info["call_id"]}, status=202
    )


@api.get(
    "/api/calls/{call_id}/conference",
    summary="A live call's conference: dispatchers, supervisors, who is ringing",
    roles=_EVERYONE,
    problems=(404,),
)
async def get_conference(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    snap = request.app[CONFERENCES].snapshot(call_id)
    if snap is None:
        return error(404, f"call {call_id!r} is not live with a call taker")
    return web.json_response(snap)


@api.post(
    "/api/calls/{call_id}/dispatchers",
    summary="Ring an agency's dispatchers into the call",
    audited=("call.add_dispatcher", "call:{call_id}"),
    roles=_STAFF,
    body=AddDispatcherBody,
    **_ASKS,
)
async def add_dispatcher(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, AddDispatcherBody)
    call_id = request.match_info["call_id"]
    audit.note(request, after={"agency": body.agency, "role": body.role and body.role.value})
    return await _accepted(
        request, lambda: conference.AddAgency(call_id, body.agency, "api", body.role)
    )


@api.post(
    "/api/calls/{call_id}/dispatchers/mass-incident",
    summary="Ring every mass-incident agency into the call",
    audited=("call.add_mass_incident", "call:{call_id}"),
    roles=_STAFF,
    **_ASKS,
)
async def add_mass_incident(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    return await _accepted(request, lambda: conference.AddMassIncident(call_id, "api"))


@api.delete(
    "/api/calls/{call_id}/dispatchers/{agency}",
    summary="Remove an agency's dispatcher, or stop ringing it",
    audited=("call.remove_dispatcher", "call:{call_id}"),
    roles=_STAFF,
    **_ASKS,
)
async def remove_dispatcher(request: web.Request) -> web.StreamResponse:
    call_id, agency = request.match_info["call_id"], request.match_info["agency"]
    audit.note(request, after={"agency": agency})
    return await _accepted(request, lambda: conference.RemoveAgency(call_id, agency, "api"))


@api.post(
    "/api/calls/{call_id}/dispatchers/{agency}/role",
    summary="Set a dispatcher's role: talk or listen",
    audited=("call.set_role", "call:{call_id}"),
    roles=_STAFF,
    body=RoleBody,
    **_ASKS,
)
async def set_role(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, RoleBody)
    call_id, agency = request.match_info["call_id"], request.match_info["agency"]
    role = conference.Role(body.role)
    audit.note(request, after={"agency": agency, "role": role.value})
    return await _accepted(request, lambda: conference.SetRole(call_id, agency, role, "api"))


@api.post(
    "/api/calls/{call_id}/handover",
    summary="The call taker leaves; the dispatchers keep the caller",
    audited=("call.hand_over", "call:{call_id}"),
    roles=_STAFF,
    **_ASKS,
)
async def hand_over(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    return await _accepted(request, lambda: conference.HandOver(call_id, "api"))


@api.post(
    "/api/calls/{call_id}/supervision",
    summary="Ring a supervisor's phone into the call",
    audited=("call.supervise", "call:{call_id}"),
    roles=_SUPERVISORS,
    body=SuperviseBody,
    **_ASKS,
)
async def supervise(request: web.Request) -> web.StreamResponse:
    body = routes.body(request, SuperviseBody)
    call_id = request.match_info["call_id"]
    audit.note(
        request,
        after={"supervisor": body.supervisor, "endpoint": body.endpoint, "mode": body.mode.value},
    )
    return await _accepted(
        request, lambda: conference.Supervise(call_id, body.supervisor, body.endpoint, body.mode)
    )


@api.delete(
    "/api/calls/{call_id}/supervision/{supervisor}",
    summary="End a supervision",
    audited=("call.end_supervision", "call:{call_id}"),
    roles=_SUPERVISORS,
    **_ASKS,
)
async def end_supervision(request: web.Request) -> web.StreamResponse:
    call_id, sup = request.match_info["call_id"], request.match_info["supervisor"]
    audit.note(request, after={"supervisor": sup})
    return await _accepted(request, lambda: conference.EndSupervision(call_id, sup))


def add_conference_routes(
    app: web.Application, conferences: conference.Conferences, submit: Submit
) -> None:
    """Routes of the conference API (tokens and roles as in ``adapters.http``)."""
    app[CONFERENCES] = conferences
    app[SUBMIT] = submit
    api.install(app)
