"""The service's Prometheus metrics read the real core's state: exact values, not just names."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ops._live import CENTRE, LiveCentre, busy_centre
from siaga_pbx import ari, core
from siaga_pbx.adapters.metrics import Metrics
from siaga_pbx.service import CallService, TelephonyCommand

# The story centre with t1 alone on duty: every other caller waits for t1.
ONE_TAKER = core.CentreConfig(queues=CENTRE.queues, takers=CENTRE.takers[:1])


class TestQueueGauges:
    """siaga_callers_waiting and siaga_oldest_wait_seconds follow the core's waiting callers."""

    def test_waiting_callers_are_counted_per_queue(self) -> None:
        """One caller waits in main and one (overflowed) in backup; the connected call is not."""
        live = busy_centre()
        assert live.sample("siaga_callers_waiting", queue="main") == 1.0
        assert live.sample("siaga_callers_waiting", queue="backup") == 1.0

    def test_oldest_wait_is_the_longest_current_wait(self) -> None:
        """The oldest wait is counted from arrival in the system: 40 s in main, 65 s in backup."""
        live = busy_centre()
        assert live.sample("siaga_oldest_wait_seconds", queue="main") == 40.0
        assert live.sample("siaga_oldest_wait_seconds", queue="backup") == 65.0

    def test_oldest_wait_grows_with_the_clock_between_scrapes(self) -> None:
        """Scraped 7.5 s later, with nothing else happening, every wait is 7.5 s longer."""
        live = busy_centre()
        live.advance(77.5)
        assert live.sample("siaga_oldest_wait_seconds", queue="main") == 47.5
        assert live.sample("siaga_oldest_wait_seconds", queue="backup") == 72.5

    def test_a_ringing_caller_is_still_waiting(self) -> None:
        """While a handset rings for them, the caller is waiting (and the taker is ringing)."""
        live = LiveCentre(ONE_TAKER)
        live.arrive("c1", 10.0)
        live.advance(13.0)
        assert live.sample("siaga_callers_waiting", queue="main") == 1.0
        assert live.sample("siaga_oldest_wait_seconds", queue="main") == 3.0
        assert live.sample("siaga_takers", status="ringing") == 1.0

    def test_a_connected_call_leaves_the_gauges(self) -> None:
        """Once answered, the caller no longer counts as waiting; the taker is on_call."""
        live = LiveCentre(ONE_TAKER)
        live.arrive("c1", 0.0)
        live.answer("c1", 4.0)
        live.advance(30.0)
        assert live.sample("siaga_callers_waiting", queue="main") == 0.0
        assert live.sample("siaga_oldest_wait_seconds", queue="main") == 0.0
        assert live.sample("siaga_takers", status="on_call") == 1.0

    def test_the_waiting_count_rises_and_falls(self) -> None:
        """Two callers wait behind a connected call; one hangs up, the other overflows."""
        live = LiveCentre(ONE_TAKER)
        live.arrive("c1", 0.0)
        live.answer("c1", 1.0)
        live.arrive("c2", 2.0)
        live.arrive("c3", 3.0)
        assert live.sample("siaga_callers_waiting", queue="main") == 2.0
        live.hang_up("c3", 9.0)
        assert live.sample("siaga_callers_waiting", queue="main") == 1.0
        assert live.sample("siaga_oldest_wait_seconds", queue="main") == 7.0
        live.advance(63.0)  # c2 overflowed to backup at 62 s
        assert live.sample("siaga_callers_waiting", queue="main") == 0.0
        assert live.sample("siaga_callers_waiting", queue="backup") == 1.0
        assert live.sample("siaga_oldest_wait_seconds", queue="backup") == 61.0


class TestOtherLiveGauges:
    """Takers by status and pending callbacks, from the same snapshot."""

    def test_takers_by_status(self) -> None:
        """t1 is on a call, t2 and t3 are logged out; every other status reads 0."""
        live = busy_centre()
        statuses = {s.value: live.sample("siaga_takers", status=s.value) for s in core.TakerStatus}
        assert statuses == {
            "offline": 2.0,
            "available": 0.0,
            "ringing": 0.0,
            "on_call": 1.0,
            "wrap_up": 0.0,
            "paused": 0.0,
        }

    def test_pending_callback_and_its_age(self) -> None:
        """The caller who abandoned at 11 s is one pending callback, 59 s old at 70 s."""
        live = busy_centre()
        assert live.sample("siaga_callbacks_pending") == 1.0
        assert live.sample("siaga_callback_oldest_age_seconds") == 59.0


class TestTimelineMetrics:
    """Counters and histograms from the core's published timeline."""

    def test_calls_counted_by_queue(self) -> None:
        """Four calls arrived in main: one answered, one abandoned, one overflowed."""
        live = busy_centre()
        assert live.sample("siaga_calls_arrived_total", queue="main") == 4.0
        assert live.sample("siaga_calls_answered_total", queue="main") == 1.0
        assert live.sample("siaga_calls_abandoned_total", queue="main") == 1.0
        assert live.sample("siaga_calls_overflowed_total", queue="main") == 1.0

    def test_answer_time_observed(self) -> None:
        """The one answered call waited 2 s: in the 2 s bucket and every one above it."""
        live = busy_centre()
        assert live.sample("siaga_answer_seconds_count", queue="main") == 1.0
        assert live.sample("siaga_answer_seconds_sum", queue="main") == 2.0
        assert live.sample("siaga_answer_seconds_bucket", queue="main", le="1.0") == 0.0
        assert live.sample("siaga_answer_seconds_bucket", queue="main", le="2.0") == 1.0

    def test_abandon_wait_carries_the_queue(self) -> None:
        """The caller who abandoned after 3 s is observed under queue main."""
        live = busy_centre()
        assert live.sample("siaga_abandon_wait_seconds_count", queue="main") == 1.0
        assert live.sample("siaga_abandon_wait_seconds_sum", queue="main") == 3.0
        assert live.sample("siaga_abandon_wait_seconds_bucket", queue="main", le="2.0") == 0.0
        assert live.sample("siaga_abandon_wait_seconds_bucket", queue="main", le="5.0") == 1.0

    def test_failed_offers_and_commands_by_cause(self) -> None:
        """t3's busy handset is one offer failure; c3's unplayable greeting one command failure."""
        live = busy_centre()
        assert live.sample("siaga_offer_failures_total", reason="busy") == 1.0
        assert live.sample("siaga_command_failures_total", command="PlayPrompt") == 1.0


class TestCountersAndProcess:
    """Counts kept outside the core are counters; the process collector is registered."""

    def test_reconnects_are_a_counter(self) -> None:
        """siaga_ari_reconnects_total is exported with TYPE counter and its current value."""
        live = LiveCentre()
        live.reconnects = 3
        families = {f.name: f for f in text_string_to_metric_families(live.scrape())}
        assert families["siaga_ari_reconnects"].type == "counter"
        assert live.sample("siaga_ari_reconnects_total") == 3.0

    def test_process_collector_reports_rss_and_fds(self) -> None:
        """The registry has this process's resident memory and open file descriptors."""
        metrics = Metrics()
        rss = metrics.registry.get_sample_value("process_resident_memory_bytes")
        fds = metrics.registry.get_sample_value("process_open_fds")
        assert rss is not None and rss > 1_000_000  # a Python process uses megabytes
        assert fds is not None and fds >= 3  # stdin, stdout and stderr at least


class NullTelephony:
    """Carries out no Asterisk request: this test is about the consumer's timing only."""

    async def run(self, cmd: TelephonyCommand) -> None:
        return None

    async def hand_back(self, call_id: str) -> None:
        return None

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        return None

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        return None


class TestCoreHandleTime:
    """The consumer observes how long the core takes for each event."""

    @pytest.mark.parametrize("events", [1, 3])
    async def test_every_event_fed_is_observed_once(self, events: int) -> None:
        """Feeding N events through the service observes siaga_core_handle_seconds N times."""
        centre = core.CentreConfig(
            queues=(core.QueueConfig("main", reassurance_every_s=None),),
            takers=(core.TakerConfig("t1", "PJSIP/t1"),),
        )
        metrics = Metrics()
        service = CallService(
            distributor=core.Distributor(centre),
            telephony=NullTelephony(),
            observers=[metrics],
            on_command_failed=metrics.command_failed,
            on_core_handled=metrics.core_handled,
            clock=lambda: 1000.0,
        )
        try:
            for n in range(events):
                arrival = core.CallerArrived(f"c{n}", core.CallerIdentity(number="0811"), "main")
                await service.feed(arrival)
            await asyncio.wait_for(service.idle(), 5)
        finally:
            service.cancel_timers()
        count = metrics.registry.get_sample_value("siaga_core_handle_seconds_count")
        total = metrics.registry.get_sample_value("siaga_core_handle_seconds_sum")
        assert count == float(events)
        assert total is not None and 0.0 < total < 1.0
