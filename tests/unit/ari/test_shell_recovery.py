"""The shell's recovery (``service.resynchronise``) against a scripted fake ARI server.

Asterisk's state is scripted as REST replies; the cores are real. Each test
checks the outcome (what the cores hold, what was swept), not call counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from siaga_pbx import ari, conference, core
from siaga_pbx.service import CallService, Resync, resynchronise

from . import _samples
from ._fake_ari import PASSWORD, USERNAME, FakeAri

pytestmark = pytest.mark.timeout(10)

APP = "siaga-112"
CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"), core.TakerConfig("taker2", "PJSIP/taker2")),
)


@dataclass
class Journal:
    """An observer that keeps what was published."""

    items: list[object] = field(default_factory=list)

    def call_arrived(self, event: core.CallerArrived, at: float, incident_id: str) -> None:
        return None

    def published_items(self) -> list[core.PublishCallEvent]:
        return [p for p in self.items if isinstance(p, core.PublishCallEvent)]

    def published(self, item: object, incident_id: str | None) -> None:
        self.items.append(item)

    def recording_done(self, call_id: str, name: str, incident_id: str | None) -> None:
        return None


class QuietTelephony:
    """Accepts every command (recovery is under test, not the commands)."""

    async def run(self, cmd: object) -> None:
        return None

    async def hand_back(self, call_id: str) -> None:
        return None

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        return None

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        return None


def caller(cid: str, at: str, **vars_: str) -> dict[str, Any]:
    return _samples.channel(
        cid, state="Up", creationtime=f"2026-11-28T10:00:{at}.000+0000", channelvars=vars_
    )


def handset(cid: str, taker: str) -> dict[str, Any]:
    return _samples.channel(cid, state="Up", name=f"PJSIP/{taker}-0000001a")


def bridge(bid: str, *channels: str) -> dict[str, Any]:
    return _samples.bridge(bid) | {"channels": list(channels)}


def script(fake: FakeAri) -> None:
    """Asterisk after our restart: one connected call (answered at 1000.0),
    one waiting caller, one caller we never bridged, a ringing offer nobody
    owns any more, and a bridge whose caller is gone."""
    fake.reply(
        "GET",
        "/channels",
        200,
        [
            caller("1.1", "00", SIAGA_ANSWERED_AT="1000.0"),
            handset("siaga-offer-1.1-2", "taker1"),
            caller("1.2", "05"),
            caller("1.3", "02"),
            _samples.channel("siaga-offer-1.2-1", state="Ringing", name="PJSIP/taker2-0000001b"),
        ],
    )
    fake.reply(
        "GET",
        "/bridges",
        200,
        [
            bridge("siaga-call-1.1", "1.1", "siaga-offer-1.1-2"),
            bridge("siaga-call-1.2", "1.2"),
            bridge("siaga-call-9.9"),
        ],
    )
    fake.reply(
        "GET",
        f"/applications/{APP}",
        200,
        {
            "name": APP,
            "channel_ids": ["1.1", "1.2", "1.3", "siaga-offer-1.1-2"],
            "bridge_ids": [],
            "endpoint_ids": [],
            "device_names": [],
        },
    )
    fake.reply("DELETE", "/channels/siaga-offer-1.2-1", 204)
    fake.reply("DELETE", "/bridges/siaga-call-9.9", 204)


def make_service(journal: Journal, clock: list[float]) -> CallService:
    return CallService(
        distributor=core.Distributor(CENTRE),
        conferences=conference.Conferences(conference.AgencyDirectory(())),
        telephony=QuietTelephony(),
        observers=[journal],
        clock=lambda: clock[0],
    )


class TestResynchronise:
    async def test_rebuilds_calls_in_arrival_order_and_sweeps_leftovers(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """After a restart the connected call is adopted with its taker, the
        others wait in order of arrival, and only our orphans are swept."""
        script(fake_ari)
        rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2)
        journal, clock = Journal(), [2000.0]
        service = make_service(journal, clock)
        await resynchronise(service, rest, APP)
        d = service.distributor
        assert d.connected_attempts() == {"siaga-offer-1.1-2": "1.1"}
        assert d.waiting_calls() == ["1.3", "1.2"]  # 10:00:02 before 10:00:05
        swept = {(r.method, r.path) for r in fake_ari.requests if r.method == "DELETE"}
        assert swept == {
            ("DELETE", "/channels/siaga-offer-1.2-1"),
            ("DELETE", "/bridges/siaga-call-9.9"),
        }

    async def test_talk_time_after_a_restart_counts_from_the_real_answer(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """The adopted call's hang-up reports talk time from the answer written
        on the caller's channel (1000.0), not from the adoption (2000.0)."""
        script(fake_ari)
        rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2)
        journal, clock = Journal(), [2000.0]
        service = make_service(journal, clock)
        await resynchronise(service, rest, APP)
        clock[0] = 2012.5
        await service.feed(core.CallerHungUp("1.1", 16))
        hung_up = [p for p in journal.published_items() if p.stage is core.CallStage.HUNG_UP]
        assert [p.detail["talk_s"] for p in hung_up] == [1012.5]

    async def test_a_garbled_answer_time_falls_back_to_the_adoption(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A channel variable that is not a time is ignored, never a crash."""
        script(fake_ari)
        channels = [
            caller("1.1", "00", SIAGA_ANSWERED_AT="nan"),
            handset("siaga-offer-1.1-2", "taker1"),
        ]
        fake_ari.reply("GET", "/channels", 200, channels)
        rest = ari.AriRest(session, fake_ari.http_url, USERNAME, PASSWORD, timeout_s=2)
        journal, clock = Journal(), [2000.0]
        service = make_service(journal, clock)
        await resynchronise(service, rest, APP)
        clock[0] = 2003.0
        await service.feed(core.CallerHungUp("1.1", 16))
        hung_up = [p for p in journal.published_items() if p.stage is core.CallStage.HUNG_UP]
        assert [p.detail["talk_s"] for p in hung_up] == [3.0]


class TestResyncRetried:
    async def test_a_failed_resync_is_tried_again_until_it_succeeds(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A resync that raises is logged and retried; it is not left unreconciled."""
        monkeypatch.setattr("siaga_pbx.service._consumer.RESYNC_RETRY_S", (0.01,))
        attempts: list[int] = []
        done = asyncio.Event()

        async def flaky(service: CallService) -> None:
            attempts.append(len(attempts) + 1)
            if len(attempts) < 3:
                raise ari.AriUnavailable("GET", "/channels", None, "Asterisk is unreachable")
            done.set()

        service = CallService(
            distributor=core.Distributor(CENTRE), telephony=QuietTelephony(), resync=flaky
        )
        task = asyncio.create_task(service.run())
        with capture_logs() as logs:
            service.submit(Resync())
            await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        service.cancel_timers()
        assert attempts == [1, 2, 3]
        failures = [e for e in logs if e["event"] == "recovery.resync_failed"]
        assert [e["failures"] for e in failures] == [1, 2]
