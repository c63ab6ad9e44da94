"""The I/O shell of the conference core (``siaga_pbx.conference``).

- ``ConferenceDesk`` sits beside the distribution core in the one consumer
  task (``CallService``): it takes its own items from the inbox (API
  requests, its timers), sees every ARI event through
  ``adapters.ari.translate_conference``, hears which calls the distribution
  core connected or ended, and runs the conference core's commands.
- ``ConferenceRunner`` carries out those commands with ARI REST calls, in
  the idempotent style of ``AriCommandRunner`` (404 on a hangup, 409 on a
  create: already done).
- ``AgencyWatcher`` keeps the agency directory fresh from PostgreSQL
  (migration 0004): loads it at start-up and on every NOTIFY, keeps the last
  good copy, and never lets a call wait for the database (the settings' copy
  serves until the database answers).
- ``add_conference_routes``: the HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import asyncpg
import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import ari, conference, core, ids
from ..service import CallService, ConferenceRequest, Item
from .ari import caller_identity_of, translate_conference
from .http import error, read_json, require, validation_error

log = structlog.get_logger(__name__)

_MEDIA: Mapping[conference.Tone, list[str]] = {
    conference.Tone.JOINED: ["sound:siaga/joined"],
    conference.Tone.LEFT: ["sound:siaga/left"],
    conference.Tone.FAILED: ["sound:siaga/left", "sound:siaga/left", "sound:siaga/left"],
}
_SHELL_COMMANDS = (core.StartTimer, core.CancelTimer, core.PublishCallEvent)


class ConferenceRunner:
    """Carries out conference commands that touch Asterisk. Raises on failure."""

    def __init__(self, rest: ari.AriRest, app: str, language: str = "id") -> None:
        self.rest = rest
        self._app = app
        self._language = language

    async def _ignoring(self, coro: Any, *errors: type[Exception]) -> None:
        with contextlib.suppress(*errors):
            await coro

    async def _keep_role(self, leg_id: str, role: str) -> None:
        """Write the party's role on its leg, for adoption after a restart.
        Before the join, so a leg in the bridge always says how it joined."""
        if role:
            await self.rest.set_variable(leg_id, "SIAGA_ROLE", role)

    async def run(self, cmd: conference.ConferenceCommand) -> None:
        rest = self.rest
        if isinstance(cmd, conference.RingParty):
            await rest.originate(
                cmd.endpoint,
                channel_id=cmd.leg_id,
                app=self._app,
                app_args=["party", cmd.call_id],
                timeout_s=int(cmd.timeout_s) + 5,  # the core's timer ends the ring first
                caller_id=f'"{cmd.label}" <112>',
                variables={"SIAGA_PARTY": cmd.tag} if cmd.tag else {},
            )
        elif isinstance(cmd, conference.CancelParty):
            await self._ignoring(rest.hangup(cmd.leg_id), ari.AriNotFound)
        elif isinstance(cmd, conference.BridgeParty):
            await self._keep_role(cmd.leg_id, cmd.role)
            if cmd.muted:  # before joining: not one word of a listener reaches the call
                await rest.mute(cmd.leg_id, "in")
            await rest.add_channel(ids.bridge_id(cmd.call_id), [cmd.leg_id])
        elif isinstance(cmd, conference.SetMuted):
            await self._keep_role(cmd.leg_id, cmd.role)
            if cmd.muted:
                await rest.mute(cmd.leg_id, "in")
            else:
                await rest.unmute(cmd.leg_id, "in")
        elif isinstance(cmd, conference.SnoopParty):
            await self._keep_role(cmd.leg_id, cmd.role)
            await self._ignoring(
                rest.create_bridge(cmd.snoop_id, type="mixing", name=cmd.snoop_id),
                ari.AriConflict,
            )
            await rest.add_channel(cmd.snoop_id, [cmd.leg_id])
            await rest.snoop(
                cmd.target,
                cmd.snoop_id,
                self._app,
                spy=cmd.spy.value,
                whisper=cmd.whisper.value,
            )
        elif isinstance(cmd, conference.BridgeSnoop):
            await rest.add_channel(cmd.snoop_id, [cmd.snoop_id])
        elif isinstance(cmd, conference.DropSnoop):
            await self._ignoring(rest.hangup(cmd.snoop_id), ari.AriNotFound)
            await self._ignoring(rest.destroy_bridge(cmd.snoop_id), ari.AriNotFound)
        elif isinstance(cmd, conference.PlayTone):
            media = _MEDIA[cmd.tone]
            if cmd.channel_id:
                await self._ignoring(
                    rest.play(cmd.channel_id, media, cmd.playback_id, lang=self._language),
                    ari.AriNotFound,
                )
            else:
                await rest.request(
                    "POST",
                    f"/bridges/{ids.bridge_id(cmd.call_id)}/play",
                    params={
                        "media": ",".join(media),
                        "playbackId": cmd.playback_id,
                        "lang": self._language,
                    },
                )
        elif isinstance(cmd, conference.EndConference):
            await self._ignoring(rest.hangup(cmd.call_id), ari.AriNotFound)
            await self._ignoring(rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)
        elif isinstance(cmd, (conference.HandOverCall, conference.ReturnCall)):
            raise TypeError(f"{type(cmd).__name__} is run by the desk, not over ARI")
        else:  # pragma: no cover - exhaustive
            raise TypeError(f"not a conference command: {type(cmd).__name__}")


class ConferenceDesk:
    """The conference core plus its runner, driven from the service's consumer."""

    def __init__(
        self,
        conferences: conference.Conferences,
        runner: ConferenceRunner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.core = conferences
        self._runner = runner
        self._clock = clock

    # ---- hooks the service calls (one consumer task: no locks) -------------

    async def intercept(self, item: Item, service: CallService) -> bool:
        """Take our own items; watch ARI events. True: the item was ours only."""
        if isinstance(item, ConferenceRequest):
            await self.feed(item.event, service)
            return True
        if isinstance(item, core.TimerFired) and item.timer_id.startswith(conference.TIMER_PREFIX):
            await self.feed(item, service)
            return True
        if isinstance(item, BaseModel):  # an ARI event: the distribution core sees it too
            for ev in translate_conference(item):
                await self.feed(ev, service)
        return False

    async def after_command(self, cmd: core.Command, service: CallService) -> None:
        """The distribution core connected or ended a call (its command ran)."""
        if isinstance(cmd, core.ConnectCall):
            await self.feed(
                conference.CallConnected(cmd.call_id, cmd.attempt_id, cmd.taker_id), service
            )
        elif isinstance(cmd, (core.EndCall, core.RedirectCaller)):
            await self.feed(conference.CallEnded(cmd.call_id), service)

    # ---- running the core ----------------------------------------------------

    async def adopt(
        self,
        service: CallService,
        call_id: str,
        *,
        taker_channel: str | None,
        taker_id: str,
        parties: list[conference.AdoptedParty],
        offers_made: int,
    ) -> None:
        """Recovery: rebuild one call's conference (``Conferences.adopt``)."""
        with structlog.contextvars.bound_contextvars(
            call_id=call_id, incident_id=service.incident_of(call_id)
        ):
            commands = self.core.adopt(
                call_id,
                taker_channel=taker_channel,
                taker_id=taker_id,
                parties=parties,
                now=self._clock(),
                offers_made=offers_made,
            )
            log.info(
                "recovery.adopted_conference",
                handed_over=taker_channel is None,
                parties=[f"{p.who}:{p.role}" for p in parties],
            )
            for cmd in commands:
                await self._execute(cmd, service)

    async def feed(self, event: conference.Event | core.TimerFired, service: CallService) -> None:
        call_id = getattr(event, "call_id", None)
        with structlog.contextvars.bound_contextvars(
            call_id=call_id, incident_id=service.incident_of(call_id) if call_id else None
        ):
            commands = self.core.handle(event, self._clock())
            log.debug(
                "conference.handled",
                conference_event=type(event).__name__,
                commands=[type(c).__name__ for c in commands],
            )
            for cmd in commands:
                await self._execute(cmd, service)

    async def _execute(self, cmd: conference.Command, service: CallService) -> None:
        if isinstance(cmd, _SHELL_COMMANDS):
            await service.run_commands([cmd])
        elif isinstance(cmd, conference.HandOverCall):
            await service.feed(core.TakerHandedOver(cmd.call_id))
        elif isinstance(cmd, conference.ReturnCall):
            await self._return_call(cmd, service)
        else:
            try:
                await self._runner.run(cmd)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the core
                log.warning(
                    "conference.command_failed", command=type(cmd).__name__, error=str(exc)[:300]
                )
                failed = conference.PartyCommandFailed(cmd, str(exc)[:300])
                service.submit(ConferenceRequest(failed))

    async def _return_call(self, cmd: conference.ReturnCall, service: CallService) -> None:
        """Queue a handed-over caller again: nobody talks with them any more."""
        try:
            chan = await self._runner.rest.get_channel(cmd.call_id)
        except ari.AriNotFound:
            # The caller hung up at the same moment: nobody will take this call
            # back, so its end is still ours (the StasisEnd only tidies legs).
            await self._runner.run(conference.EndConference(cmd.call_id))
            detail: dict[str, str | int | float | bool] = {"side": "caller", "handed_over": True}
            stage = core.CallStage.HUNG_UP
            await service.run_commands(
                [core.PublishCallEvent(cmd.call_id, stage, self._clock(), detail)]
            )
            return
        except Exception as exc:  # noqa: BLE001 - queue them anyway, with what we know
            log.warning("conference.return_lookup_failed", error=str(exc)[:300])
            chan = None
        who = caller_identity_of(chan) if chan is not None else core.CallerIdentity()
        arrived = chan.creationtime.timestamp() if chan and chan.creationtime else self._clock()
        log.warning("conference.caller_returned_to_queue", offers_made=cmd.offers_made)
        await service.run_commands(
            service.distributor.readmit_caller(
                cmd.call_id,
                caller=who,
                arrived_at=arrived,
                now=self._clock(),
                offers_made=cmd.offers_made,
            )
        )


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

DESK: web.AppKey[ConferenceDesk] = web.AppKey("conference_desk", ConferenceDesk)
_SERVICE: web.AppKey[CallService] = web.AppKey("conference_service", CallService)


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


def _submit(request: web.Request, event: conference.Event) -> web.Response | None:
    """Check the request against the core's state now (4xx), then queue it."""
    desk = request.app[DESK]
    call_id = request.match_info["call_id"]
    if not desk.core.is_live(call_id):
        return error(404, f"call {call_id!r} is not live with a call taker")
    agency = getattr(event, "agency", None)
    if agency is not None and desk.core.directory.get(agency) is None:
        return error(404, f"no agency {agency!r}")
    try:
        desk.core.check(event)
    except core.RemoteProtocolError as exc:
        return error(409, str(exc))
    request.app[_SERVICE].submit(ConferenceRequest(event))
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


@require("admin", "supervisor", "taker", "ops")
async def get_agencies(request: web.Request) -> web.StreamResponse:
    return web.json_response(
        {
            "agencies": [
                {
                    "code": a.code,
                    "name": a.name,
                    "digit": a.digit,
                    "endpoints": list(a.endpoints),
                    "strategy": a.strategy.value,
                    "ring_timeout_s": a.ring_timeout_s,
                    "fallback": a.fallback,
                    "role": a.role.value,
                    "mass_incident": a.mass_incident,
                }
                for a in request.app[DESK].core.directory.agencies
            ]
        }
    )


@require("admin", "supervisor", "taker", "ops")
async def get_conference(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    snap = request.app[DESK].core.snapshot(call_id)
    if snap is None:
        return error(404, f"call {call_id!r} is not live with a call taker")
    return web.json_response(snap)


@require("admin", "supervisor", "taker")
async def add_dispatcher(request: web.Request) -> web.StreamResponse:
    try:
        body = AddDispatcherBody.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    call_id = request.match_info["call_id"]
    return await _accepted(
        request, lambda: conference.AddAgency(call_id, body.agency, "api", body.role)
    )


@require("admin", "supervisor", "taker")
async def add_mass_incident(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    return await _accepted(request, lambda: conference.AddMassIncident(call_id, "api"))


@require("admin", "supervisor", "taker")
async def remove_dispatcher(request: web.Request) -> web.StreamResponse:
    call_id, agency = request.match_info["call_id"], request.match_info["agency"]
    return await _accepted(request, lambda: conference.RemoveAgency(call_id, agency, "api"))


@require("admin", "supervisor", "taker")
async def set_role(request: web.Request) -> web.StreamResponse:
    try:
        body = RoleBody.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    call_id, agency = request.match_info["call_id"], request.match_info["agency"]
    role = conference.Role(body.role)
    return await _accepted(request, lambda: conference.SetRole(call_id, agency, role, "api"))


@require("admin", "supervisor", "taker")
async def hand_over(request: web.Request) -> web.StreamResponse:
    call_id = request.match_info["call_id"]
    return await _accepted(request, lambda: conference.HandOver(call_id, "api"))


@require("admin", "supervisor")
async def supervise(request: web.Request) -> web.StreamResponse:
    try:
        body = SuperviseBody.model_validate(await read_json(request))
    except ValidationError as exc:
        return validation_error(exc)
    call_id = request.match_info["call_id"]
    return await _accepted(
        request, lambda: conference.Supervise(call_id, body.supervisor, body.endpoint, body.mode)
    )


@require("admin", "supervisor")
async def end_supervision(request: web.Request) -> web.StreamResponse:
    call_id, sup = request.match_info["call_id"], request.match_info["supervisor"]
    return await _accepted(request, lambda: conference.EndSupervision(call_id, sup))


def add_conference_routes(app: web.Application, desk: ConferenceDesk, service: CallService) -> None:
    """Routes of the conference API (tokens and roles as in ``adapters.http``)."""
    app[DESK] = desk
    app[_SERVICE] = service
    r = app.router
    r.add_get("/api/agencies", get_agencies)
    r.add_get("/api/calls/{call_id}/conference", get_conference)
    r.add_post("/api/calls/{call_id}/dispatchers", add_dispatcher)
    r.add_post("/api/calls/{call_id}/dispatchers/mass-incident", add_mass_incident)
    r.add_delete("/api/calls/{call_id}/dispatchers/{agency}", remove_dispatcher)
    r.add_post("/api/calls/{call_id}/dispatchers/{agency}/role", set_role)
    r.add_post("/api/calls/{call_id}/handover", hand_over)
    r.add_post("/api/calls/{call_id}/supervision", supervise)
    r.add_delete("/api/calls/{call_id}/supervision/{supervisor}", end_supervision)
