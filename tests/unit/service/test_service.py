"""The consumer shell and the HTTP API, around a real core and a scripted runner."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from problem_shape import fields, problem_of
from siaga_pbx import ari, core
from siaga_pbx.adapters.http import make_app
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.service import TELEPHONY_COMMANDS, CallService, incident_id_for, lane_of

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main", ring_timeout_s=5.0),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"),),
)
TOKENS = {"admin-token": "admin", "ops-token": "ops"}


@dataclass
class ScriptedRunner:
    """Records commands; fails the ones named in ``fail``."""

    fail: set[type] = field(default_factory=set)
    ran: list[core.Command] = field(default_factory=list)
    handed_back: list[str] = field(default_factory=list)

    finished: list[tuple[str, bool]] = field(default_factory=list)

    async def run(self, cmd: object) -> None:
        self.ran.append(cmd)  # type: ignore[arg-type]
        if type(cmd) in self.fail:
            raise ari.AriUnavailable("POST", "/x", None, "Asterisk is unreachable")

    async def hand_back(self, call_id: str) -> None:
        self.handed_back.append(call_id)
        if "hand_back" in {t.__name__ for t in self.fail}:
            raise ari.AriNotFound("POST", "/x", 404, "Channel not found")

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        self.finished.append((channel_id, ok))

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        return None


@dataclass
class Recorder:
    """An observer that keeps what it was told."""

    arrived: list[tuple[str, str]] = field(default_factory=list)
    items: list[object] = field(default_factory=list)

    def call_arrived(self, event: core.CallerArrived, at: float, incident_id: str) -> None:
        self.arrived.append((event.call_id, incident_id))

    def published(self, item: object, incident_id: str | None) -> None:
        self.items.append(item)

    recordings: list[tuple[str, str]] = field(default_factory=list)

    def recording_done(self, call_id: str, name: str, incident_id: str | None) -> None:
        self.recordings.append((call_id, name))


def make_service(
    runner: ScriptedRunner, recorder: Recorder, metrics: Metrics | None = None
) -> CallService:
    return CallService(
        distributor=core.Distributor(CENTRE),
        telephony=runner,
        observers=[recorder],
        on_command_failed=metrics.command_failed if metrics else None,
        clock=lambda: 1000.0,
    )


async def drain(service: CallService) -> None:
    task = asyncio.create_task(service.run())
    await asyncio.wait_for(service.idle(), 5)
    task.cancel()
    service.cancel_timers()


ARRIVAL = core.CallerArrived("c1", core.CallerIdentity(number="0811"), "main")
ARI_KINDS = frozenset(TELEPHONY_COMMANDS)


class TestConsumer:
    async def test_arrival_rings_first_then_answers_and_greets_in_order(self) -> None:
        """A caller's arrival rings the free taker first (its lane starts
        first), then the call's own lane answers and greets in the core's order."""
        runner, rec = ScriptedRunner(), Recorder()
        service = make_service(runner, rec)
        commands = core.Distributor(CENTRE).handle(ARRIVAL, 1000.0)
        core_order = [type(c).__name__ for c in commands if type(c) in ARI_KINDS]
        assert core_order == ["AnswerCaller", "PlayPrompt", "RingHandset"]  # the core's
        service.submit(ARRIVAL)
        await drain(service)
        kinds = [type(c).__name__ for c in runner.ran]
        assert kinds[:3] == ["RingHandset", "AnswerCaller", "PlayPrompt"]
        assert rec.arrived == [("c1", incident_id_for("c1"))]

    async def test_failed_command_comes_back_to_the_core(self) -> None:
        """A ring that fails is fed back as CommandFailed and the taker is blocked."""
        runner, rec = ScriptedRunner(fail={core.RingHandset}), Recorder()
        metrics = Metrics()
        service = make_service(runner, rec, metrics)
        with capture_logs() as logs:
            service.submit(ARRIVAL)
            await drain(service)
        assert any(e["event"] == "service.command_failed" for e in logs)
        failures = metrics.registry.get_sample_value(
            "siaga_command_failures_total", {"command": "RingHandset"}
        )
        assert failures == 1.0  # ops see it on /metrics
        taker = service.distributor.snapshot(1000.0)["takers"][0]
        assert taker["blocked"] is True
        assert "c1" in service.distributor.waiting_calls()  # never dropped

    async def test_incident_id_is_deterministic(self) -> None:
        """The same call always maps to the same incident id (restart-safe)."""
        assert incident_id_for("siaga-lab-1.2") == incident_id_for("siaga-lab-1.2")
        assert incident_id_for("siaga-lab-1.2") != incident_id_for("siaga-lab-1.3")

    async def test_unsafe_caller_id_is_handed_to_the_fallback(self) -> None:
        """A caller whose channel id we refuse is handed to the dialplan, not ignored."""
        runner, rec = ScriptedRunner(), Recorder()
        service = make_service(runner, rec)
        service.submit(stasis_start("x" * 129))
        with capture_logs() as logs:
            await drain(service)
        assert runner.handed_back == ["x" * 129]
        assert any(e["event"] == "service.caller_rescued_to_fallback" for e in logs)

    async def test_caller_we_fail_on_is_rescued_to_the_fallback(self) -> None:
        """If handling a caller's arrival raises, the caller is handed to the dialplan."""
        runner, rec = ScriptedRunner(), Recorder()
        service = make_service(runner, rec)
        service.distributor = BrokenDistributor(CENTRE)
        service.submit(stasis_start("siaga-lab-1.1"))
        with capture_logs() as logs:
            await drain(service)
        assert runner.handed_back == ["siaga-lab-1.1"]
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [
            "service.item_failed",
            "service.caller_rescued_to_fallback",
        ]


class BrokenDistributor(core.Distributor):
    """A core with a bug: every event raises."""

    def handle(self, event: core.Event, now: float) -> list[core.Command]:
        raise RuntimeError("a bug in the core")


def stasis_start(channel_id: str) -> ari.Event:
    return ari.parse_event(
        json.dumps(
            {
                "type": "StasisStart",
                "args": ["caller", "trunk"],
                "channel": {
                    "id": channel_id,
                    "name": "PJSIP/trunk-1",
                    "state": "Up",
                    "caller": {"name": "", "number": "0811"},
                    "connected": {"name": "", "number": ""},
                    "accountcode": "",
                    "dialplan": {
                        "context": "c",
                        "exten": "s",
                        "priority": 1,
                        "app_name": "Stasis",
                        "app_data": "",
                    },
                    "creationtime": "2026-11-28T20:00:00.000+0000",
                    "language": "id",
                },
            }
        )
    )


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], CallService]]:
    service = make_service(ScriptedRunner(), Recorder())
    app = make_app(
        distributor=service.distributor,
        submit=service.submit,
        metrics_=Metrics(),
        tokens=TOKENS,
        health=lambda: {"status": "ok"},
    )
    async with TestClient(TestServer(app)) as c:
        yield c, service


class TestHttpApi:
    async def test_auth(
        self, client: tuple[TestClient[web.Request, web.Application], CallService]
    ) -> None:
        """No token is 401; a role without the right is 403."""
        c, _ = client
        assert (await c.get("/api/state")).status == 401
        ops = {"Authorization": "Bearer ops-token"}
        assert (await c.get("/api/state", headers=ops)).status == 200
        assert (await c.post("/api/takers/taker1/pause", headers=ops)).status == 403

    async def test_pause_goes_to_the_consumer(
        self, client: tuple[TestClient[web.Request, web.Application], CallService]
    ) -> None:
        """A pause request is queued for the consumer as a core event."""
        c, service = client
        admin = {"Authorization": "Bearer admin-token"}
        r = await c.post("/api/takers/taker1/pause", json={"reason": "lunch"}, headers=admin)
        assert r.status == 202
        item = service.inbox.get_nowait()
        assert item == core.TakerPaused("taker1", "lunch")

    async def test_each_taker_action_is_its_own_route(
        self, client: tuple[TestClient[web.Request, web.Application], CallService]
    ) -> None:
        """login, logout, pause and unpause each queue their own core event; another
        action is a 404 problem."""
        c, service = client
        admin = {"Authorization": "Bearer admin-token"}
        r = await c.post("/api/takers/taker1/logout", headers=admin)
        assert (r.status, await r.json()) == (202, {"accepted": "logout", "taker_id": "taker1"})
        assert service.inbox.get_nowait() == core.TakerLoggedOut("taker1")
        r = await c.post("/api/takers/taker1/pause", headers=admin)  # no body: the default
        assert r.status == 202
        assert service.inbox.get_nowait() == core.TakerPaused("taker1", "break")
        r = await c.post("/api/takers/taker1/login", headers=admin)
        assert r.status == 202
        assert service.inbox.get_nowait() == core.TakerLoggedIn("taker1")
        r = await c.post("/api/takers/taker1/unpause", headers=admin)
        assert r.status == 202
        assert service.inbox.get_nowait() == core.TakerUnpaused("taker1")
        await problem_of(await c.post("/api/takers/taker1/explode", headers=admin), 404)

    async def test_bad_payloads_get_4xx(
        self, client: tuple[TestClient[web.Request, web.Application], CallService]
    ) -> None:
        """Unknown takers, bad JSON and invalid fields are 4xx with messages, never 500
        (the configuration routes: tests/unit/centre)."""
        c, _ = client
        admin = {"Authorization": "Bearer admin-token"}
        assert (await c.post("/api/takers/nobody/login", headers=admin)).status == 404
        bad_json = await c.post("/api/takers/taker1/pause", data=b"{not json", headers=admin)
        assert bad_json.status == 400
        bad_reason = await c.post(
            "/api/takers/taker1/pause", json={"reason": "x\n" * 40}, headers=admin
        )
        assert "reason" in fields(await problem_of(bad_reason, 422))

    async def test_metrics_and_health(
        self, client: tuple[TestClient[web.Request, web.Application], CallService]
    ) -> None:
        """/metrics speaks Prometheus text and /healthz answers without a token."""
        c, _ = client
        text = await (await c.get("/metrics")).text()
        assert "siaga_answer_seconds_bucket" in text or "siaga_calls_arrived" in text
        assert (await (await c.get("/healthz")).json()) == {"status": "ok"}


def stasis_event(kind: str, channel_id: str) -> ari.Event:
    """StasisEnd or ChannelDestroyed of ``channel_id`` (built from a StasisStart)."""
    start = stasis_start(channel_id)
    assert isinstance(start, ari.StasisStart)
    body: dict[str, object] = {"type": kind, "channel": start.channel.model_dump(mode="json")}
    if kind == "ChannelDestroyed":
        body |= {"cause": 16, "cause_txt": "Normal Clearing"}
    return ari.parse_event(json.dumps(body))


class TestRecordingJournal:
    """A call's recording (the dialplan's MixMonitor) reaches the journal
    exactly once, after its caller has left our app."""

    @pytest.fixture(autouse=True)
    def _short_grace(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("siaga_pbx.service._consumer._RECORDING_GRACE_S", 0.01)

    async def _run(self, service: CallService, *items: object) -> None:
        task = asyncio.create_task(service.run())
        for item in items:
            service.submit(item)  # type: ignore[arg-type]
        await asyncio.sleep(0.2)  # the grace period passes
        await asyncio.wait_for(service.idle(), 5)
        task.cancel()

    async def test_the_callers_leaving_journals_it_once(self) -> None:
        rec = Recorder()
        service = make_service(ScriptedRunner(), rec)
        service.remember_call("c1")
        # StasisEnd, ChannelDestroyed and the core's hang-up all say "gone".
        await self._run(
            service,
            stasis_event("StasisEnd", "c1"),
            stasis_event("ChannelDestroyed", "c1"),
            core.CallerHungUp("c1"),
        )
        assert rec.recordings == [("c1", "siaga-call-c1")]

    async def test_a_hang_up_fed_by_a_resync_journals_it(self) -> None:
        rec = Recorder()
        service = make_service(ScriptedRunner(), rec)
        service.remember_call("c2")
        await self._run(service, core.CallerHungUp("c2"))
        assert rec.recordings == [("c2", "siaga-call-c2")]

    async def test_channels_that_are_not_our_calls_journal_nothing(self) -> None:
        """A handset offer, a feature-code call, a stranger: no recording of theirs."""
        rec = Recorder()
        service = make_service(ScriptedRunner(), rec)
        service.remember_call("c3")
        await self._run(
            service,
            stasis_event("StasisEnd", "siaga-offer-c3-1"),
            stasis_event("StasisEnd", "feature.1"),
            stasis_event("ChannelDestroyed", "stranger.9"),
        )
        assert rec.recordings == []

    async def test_nothing_is_journalled_while_the_caller_is_still_here(self) -> None:
        rec = Recorder()
        service = make_service(ScriptedRunner(), rec)
        service.remember_call("c4")
        task = asyncio.create_task(service.run())
        await service.run_commands([core.EndCall("c4")])  # asked to end: not gone yet
        await asyncio.sleep(0.2)
        await asyncio.wait_for(service.idle(), 5)
        assert rec.recordings == []
        service.submit(stasis_event("StasisEnd", "c4"))  # now the caller has left
        await asyncio.sleep(0.2)
        await asyncio.wait_for(service.idle(), 5)
        task.cancel()
        assert rec.recordings == [("c4", "siaga-call-c4")]

    async def test_stopping_journals_the_recordings_still_in_their_grace(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stop inside the grace period must not lose the recording."""
        monkeypatch.setattr("siaga_pbx.service._consumer._RECORDING_GRACE_S", 3600.0)
        rec = Recorder()
        service = make_service(ScriptedRunner(), rec)
        service.remember_call("c5")
        task = asyncio.create_task(service.run())
        service.submit(stasis_event("StasisEnd", "c5"))
        await asyncio.wait_for(service.idle(), 5)
        assert rec.recordings == []  # the grace period runs
        assert service.journal_pending_recordings() == 1
        assert rec.recordings == [("c5", "siaga-call-c5")]
        assert service.journal_pending_recordings() == 0  # once
        task.cancel()


def test_an_offer_runs_in_its_own_lane_and_the_connect_in_the_calls() -> None:
    """Ringing does not wait behind the caller's answer/bridge/greeting; a cancel
    or release stays behind its own ring; the connect stays behind the bridge."""
    caller = core.CallerIdentity("0812")
    attempt = "siaga-offer-c1-1"
    ring = core.RingHandset(attempt, "c1", "taker1", "PJSIP/taker1", 15.0, caller)
    offer_lane = {
        lane_of(ring),
        lane_of(core.CancelRing(attempt)),
        lane_of(core.ReleaseHandset(attempt)),
    }
    call_lane = {
        lane_of(core.AnswerCaller("c1")),
        lane_of(core.ConnectCall("c1", attempt, "taker1")),
        lane_of(core.EndCall("c1")),
    }
    assert offer_lane == {f"offer:{attempt}"}
    assert call_lane == {"c1"}
