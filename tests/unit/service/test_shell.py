"""The service shell: the conference core's I/O in lanes, the glue between
the cores, refusals that answer, shutdown that finishes, one command list."""

from __future__ import annotations

import asyncio
import typing
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from problem_shape import problem_of
from siaga_pbx import ari, conference, core
from siaga_pbx.adapters.conference import add_conference_routes
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.adapters.telephony import handled_types
from siaga_pbx.incidents import IncidentStore, add_callback_routes, add_incident_routes
from siaga_pbx.runtime import shutdown_steps
from siaga_pbx.service import (
    TELEPHONY_COMMANDS,
    CallService,
    FeatureRequest,
    lane_of,
)

pytestmark = pytest.mark.timeout(10)

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main", ring_timeout_s=5.0),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1", logged_in=False),),
)
FIRE = conference.Agency("damkar", "Damkar", ("PJSIP/disp-damkar",), digit=1)
CALLER = core.CallerIdentity(number="0811")


@dataclass
class Telephony:
    """Records commands; blocks or fails the ones a test names."""

    ran: list[object] = field(default_factory=list)
    block: set[type] = field(default_factory=set)
    fail: set[type] = field(default_factory=set)
    finished: list[tuple[str, bool]] = field(default_factory=list)
    channel: ari.Channel | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, cmd: object) -> None:
        self.ran.append(cmd)
        if type(cmd) in self.block:
            await self.released.wait()
        if type(cmd) in self.fail:
            raise ari.AriServerError("POST", "/channels", 500, "Allocation failed")

    async def hand_back(self, call_id: str) -> None:
        raise ari.AriNotFound("POST", f"/channels/{call_id}/continue", 404, "Channel not found")

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        self.finished.append((channel_id, ok))

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        return self.channel


def make_service(telephony: Telephony, centre: core.CentreConfig = CENTRE) -> CallService:
    return CallService(
        distributor=core.Distributor(centre),
        conferences=conference.Conferences(conference.AgencyDirectory((FIRE,))),
        telephony=telephony,
        clock=lambda: 1000.0,
    )


async def settle(service: CallService) -> None:
    await asyncio.wait_for(service.idle(), 5)


@pytest.fixture
async def running() -> typing.AsyncIterator[tuple[CallService, Telephony]]:
    telephony = Telephony()
    service = make_service(telephony, CENTRE_ON_DUTY)
    task = asyncio.create_task(service.run())
    yield service, telephony
    telephony.released.set()
    task.cancel()
    await service.close()


CENTRE_ON_DUTY = core.CentreConfig(
    queues=(core.QueueConfig("main", ring_timeout_s=5.0),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"),),
)


async def connect_a_call(service: CallService) -> None:
    """A caller arrives, taker1 answers, the connect runs: the call is live."""
    service.submit(core.CallerArrived("c1", CALLER, "main"))
    await settle(service)
    service.submit(core.HandsetAnswered("siaga-offer-c1-1"))
    await settle(service)


async def hand_over_to_the_fire_brigade(service: CallService, telephony: Telephony) -> str:
    """A live call; the fire dispatcher is rung, answers, and the taker hands over."""
    await connect_a_call(service)
    service.submit(conference.AddAgency("c1", "damkar"))
    await settle(service)
    leg = next(c.leg_id for c in telephony.ran if isinstance(c, conference.RingParty))
    service.submit(conference.PartyAnswered(leg))
    await settle(service)
    service.submit(conference.HandOver("c1"))
    await settle(service)
    return leg


class TestConferenceInLanes:
    async def test_a_stuck_dispatcher_ring_never_holds_up_the_consumer(
        self, running: tuple[CallService, Telephony]
    ) -> None:
        """While Asterisk sits on a dispatcher's originate, the consumer still
        serves the next caller: conference I/O runs in a lane too."""
        service, telephony = running
        await connect_a_call(service)
        assert service.conferences.is_live("c1")
        telephony.block.add(conference.RingParty)
        service.submit(conference.AddAgency("c1", "damkar"))
        await asyncio.sleep(0.05)
        service.submit(core.CallerArrived("c2", CALLER, "main"))
        await asyncio.wait_for(service.inbox.join(), 2)  # consumed while the ring hangs
        assert "c2" in service.distributor.known_calls()
        assert any(isinstance(c, conference.RingParty) for c in telephony.ran)

    async def test_a_failed_party_command_goes_back_to_the_conference_core(
        self, running: tuple[CallService, Telephony]
    ) -> None:
        """A dispatcher ring Asterisk refuses comes back as PartyCommandFailed,
        and the conference records that the agency could not be reached."""
        service, telephony = running
        await connect_a_call(service)
        telephony.fail.add(conference.RingParty)
        with capture_logs() as logs:
            service.submit(conference.AddAgency("c1", "damkar"))
            await settle(service)
        assert any(e["event"] == "service.command_failed" for e in logs)
        snap = service.conferences.snapshot("c1")
        assert snap is not None
        assert snap["parties"] == []  # the failed ring is not left dangling

    async def test_handover_frees_the_taker_through_the_coordinator(
        self, running: tuple[CallService, Telephony]
    ) -> None:
        """When the dispatcher has joined and the taker hands over, the
        distribution core forgets the call and the taker is free."""
        service, telephony = running
        await hand_over_to_the_fire_brigade(service, telephony)
        assert "c1" not in service.distributor.known_calls()
        assert "c1" in service.conferences.live_calls()
        taker = service.distributor.snapshot(1000.0)["takers"][0]
        assert taker["status"] != core.TakerStatus.ON_CALL.value

    async def test_the_last_dispatcher_leaving_puts_the_caller_back_in_the_queue(
        self, running: tuple[CallService, Telephony]
    ) -> None:
        """A handed-over caller whose dispatcher hangs up is looked up in the
        call's lane and readmitted to the queue, never left alone."""
        service, telephony = running
        telephony.channel = ari.Channel.model_validate(
            {
                "id": "c1",
                "name": "PJSIP/trunk-1",
                "state": "Up",
                "caller": {"name": "", "number": "0811"},
                "connected": {"name": "", "number": ""},
                "dialplan": {
                    "context": "siaga-emergency",
                    "exten": "s",
                    "priority": 1,
                    "app_name": "Stasis",
                    "app_data": "",
                },
                "accountcode": "",
                "creationtime": "2026-11-28T20:00:00.000+0000",
                "language": "id",
            }
        )
        leg = await hand_over_to_the_fire_brigade(service, telephony)
        service.submit(conference.PartyGone(leg, 16))
        await settle(service)
        assert "c1" in service.distributor.known_calls()  # queued again


class TestFeatureCodes:
    async def test_a_refused_feature_code_still_returns_the_handset_to_the_dialplan(
        self,
    ) -> None:
        """*14 (unpause) by a logged-out taker is refused by the core, and the
        handset hears 'failed' instead of sitting in silence in our app."""
        telephony = Telephony()
        service = make_service(telephony)  # taker1 is logged out
        task = asyncio.create_task(service.run())
        with capture_logs() as logs:
            await service._feature(FeatureRequest("feat.1", "taker1", "unpause"))
        task.cancel()
        assert telephony.finished == [("feat.1", False)]
        assert any(e["event"] == "feature.refused" for e in logs)


class TestRefusalsAnswer:
    @pytest.fixture
    async def client(self) -> typing.AsyncIterator[TestClient[web.Request, web.Application]]:
        service = make_service(Telephony())
        app = make_app(
            distributor=service.distributor,
            submit=service.submit,
            metrics_=Metrics(),
            tokens={"t-admin": "admin"},
            health=dict,
        )
        add_conference_routes(app, service.conferences, service.submit)
        store = IncidentStore("postgresql://127.0.0.1:1/none")
        add_incident_routes(app, store, {"t-admin": "admin"})
        add_callback_routes(
            app, store=store, submit=service.submit, holds=service.distributor.holds_callback
        )
        async with TestClient(TestServer(app)) as c:
            yield c

    async def test_pausing_a_logged_out_taker_is_409_with_the_cores_reason(
        self, client: TestClient[web.Request, web.Application]
    ) -> None:
        """The API asks the core first: a refusal is a 409 with its message, never a 202."""
        r = await client.post(
            "/api/takers/taker1/pause", json={}, headers={"Authorization": "Bearer t-admin"}
        )
        assert "not allowed while 'offline'" in (await problem_of(r, 409))["detail"]

    async def test_one_auth_path_for_every_route(
        self, client: TestClient[web.Request, web.Application]
    ) -> None:
        """The scheme is case-insensitive and a wrong token is 401 alike on the
        service's, the conference's and the incident API's routes."""
        routes = ["/api/state", "/api/calls/nocall/conference", "/api/callbacks"]
        for path in routes:
            ok = await client.get(path, headers={"Authorization": "bearer t-admin"})
            assert ok.status != 401, path
            bad = await client.get(path, headers={"Authorization": "Bearer t-admin2"})
            assert bad.status == 401, path
            assert bad.headers.get("WWW-Authenticate") == "Bearer", path


class TestShutdown:
    async def test_every_step_runs_even_when_one_fails(self) -> None:
        """A failing step is logged and the steps after it (the journal flush) still run."""
        ran: list[str] = []

        async def ok(name: str) -> None:
            ran.append(name)

        async def broken() -> None:
            raise RuntimeError("Asterisk went away")

        with capture_logs() as logs:
            failed = await shutdown_steps(
                [
                    ("close_stream", lambda: ok("close_stream")),
                    ("hand_back", broken),
                    ("flush_journal", lambda: ok("flush_journal")),
                ]
            )
        assert failed == ["hand_back"]
        assert ran == ["close_stream", "flush_journal"]
        assert [e["step"] for e in logs if e["event"] == "shutdown.step_failed"] == ["hand_back"]

    async def test_a_failed_hand_back_does_not_stop_the_rings_being_cancelled(
        self, running: tuple[CallService, Telephony]
    ) -> None:
        """Every waiting caller is tried and every live ring is cancelled,
        whatever failed before."""
        service, telephony = running
        service.submit(core.CallerArrived("c1", CALLER, "main"))
        await settle(service)
        assert service.distributor.live_offers()
        handed = await service.hand_back_waiting_callers()
        assert handed == 0  # the telephony refused the hand-back
        assert core.CancelRing("siaga-offer-c1-1") in telephony.ran


class TestOneCommandList:
    def test_every_telephony_command_has_exactly_one_handler(self) -> None:
        """The commands the service sends to Asterisk, derived from the cores'
        Command unions, are exactly the commands the adapter handles."""
        assert handled_types() == frozenset(TELEPHONY_COMMANDS)

    def test_every_command_of_either_core_is_carried_out_somewhere(self) -> None:
        """No command type falls through: each is telephony or run by the shell."""
        shell = {
            core.StartTimer,
            core.CancelTimer,
            core.PublishCallEvent,
            core.PublishTakerState,
            core.AddCallback,
            core.ResolveCallback,
            conference.HandOverCall,
            conference.ReturnCall,
        }
        every = set(typing.get_args(core.Command)) | set(
            typing.get_args(conference.ConferenceCommand)
        )
        assert every == shell | set(TELEPHONY_COMMANDS)

    def test_conference_commands_run_in_their_calls_lane(self) -> None:
        """A dispatcher's ring has its own lane; the conference's bridge work
        shares the call's lane with the distribution core's."""
        assert lane_of(conference.CancelParty("siaga-disp-c1-1")) == "leg:siaga-disp-c1-1"
        assert lane_of(conference.DropSnoop("siaga-snoop-c1-1")) == "c1"
        assert lane_of(conference.EndConference("c1")) == "c1"
        assert lane_of(core.EndCall("c1")) == "c1"
