"""Prometheus metrics for ops dashboards (Grafana).

Counters and histograms follow the core's published timeline; gauges that
describe "now" (callers waiting, takers by status) are read from the core's
snapshot at scrape time, so they can never drift from the truth. Counts kept
elsewhere (the ARI stream's reconnections) are also read at scrape time, and
exported as counters. The registry also carries the process collector (RSS,
open file descriptors, CPU), for the ops room's host view.

The answer-time histogram buckets match the standards ops report against:
NFPA 1225 (90 % within 10 s) and NENA (90 % within 15 s, 95 % within 20 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import core

ANSWER_BUCKETS = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0)


class _LiveCollector(Collector):
    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        extra: Callable[[], dict[str, float]],
        counters: Callable[[], dict[str, float]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._extra = extra
        self._counters = counters
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        waiting = GaugeMetricFamily(
            "siaga_callers_waiting", "Callers waiting in a queue", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "siaga_oldest_wait_seconds", "Longest current wait in a queue", labels=["queue"]
        )
        for q in snap.get("queues", []):
            # Only the callers still waiting: a connected call is no longer waiting.
            callers = q["waiting"]
            waiting.add_metric([q["name"]], len(callers))
            oldest.add_metric([q["name"]], max((c["wait_s"] for c in callers), default=0.0))
        takers = GaugeMetricFamily("siaga_takers", "Call takers by status", labels=["status"])
        counts = {s.value: 0 for s in core.TakerStatus}
        for t in snap.get("takers", []):
            counts[str(t["status"])] = counts.get(str(t["status"]), 0) + 1
        for status, n in counts.items():
            takers.add_metric([status], n)
        pending = snap.get("callbacks", [])
        callbacks = GaugeMetricFamily("siaga_callbacks_pending", "Abandoned callers to call back")
        callbacks.add_metric([], len(pending))
        oldest_cb = GaugeMetricFamily(
            "siaga_callback_oldest_age_seconds", "Age of the oldest pending callback"
        )
        now = self._clock()
        oldest_cb.add_metric(
            [], max((now - float(c["abandoned_at"]) for c in pending), default=0.0)
        )
        yield from (waiting, oldest, takers, callbacks, oldest_cb)
        for name, value in self._extra().items():
            g = GaugeMetricFamily(name, name.replace("_", " "))
            g.add_metric([], value)
            yield g
        for name, value in self._counters().items():
            # a counter family is named without "_total"; its sample carries it
            yield CounterMetricFamily(
                name.removesuffix("_total"), name.replace("_", " "), value=value
            )


class Metrics:
    """An ``Observer`` of the core's published state, with its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_open_fds, ...
        self.arrived = Counter(
            "siaga_calls_arrived", "112 calls that reached the system", ["queue"], registry=r
        )
        self.answered = Counter(
            "siaga_calls_answered", "Calls answered by a call taker", ["queue"], registry=r
        )
        self.abandoned = Counter(
            "siaga_calls_abandoned", "Callers who hung up before answer", ["queue"], registry=r
        )
        self.overflowed = Counter(
            "siaga_calls_overflowed", "Calls sent to overflow", ["queue"], registry=r
        )
        self.offer_failures = Counter(
            "siaga_offer_failures",
            "Offers to a handset that were not answered",
            ["reason"],
            registry=r,
        )
        self.answer_seconds = Histogram(
            "siaga_answer_seconds",
            "From arrival in the system to answer by a call taker",
            ["queue"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.abandon_seconds = Histogram(
            "siaga_abandon_wait_seconds",
            "How long abandoning callers waited",
            ["queue"],
            buckets=ANSWER_BUCKETS,
            registry=r,
        )
        self.command_failures = Counter(
            "siaga_command_failures",
            "Commands the ARI adapter could not carry out",
            ["command"],
            registry=r,
        )
        self.handle_seconds = Histogram(
            "siaga_core_handle_seconds",
            "Time the distribution core takes to handle one event",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.recording_failures = Counter(
            "siaga_recording_failures",
            "Call recordings failed or missing at journal time",
            registry=r,
        )
        self._arrivals: dict[str, tuple[float, str]] = {}

    def watch(
        self,
        snapshot: Callable[[], dict[str, Any]],
        extra: Callable[[], dict[str, float]],
        counters: Callable[[], dict[str, float]] = dict,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Read the core's snapshot, and ``extra`` gauges and ``counters`` (each a
        name to its current value; a counter's value must never go down), at
        every scrape. ``clock`` must be the clock the snapshot is taken with."""
        self.registry.register(_LiveCollector(snapshot, extra, counters, clock))

    def core_handled(self, seconds: float) -> None:
        """The core took ``seconds`` to handle one event."""
        self.handle_seconds.observe(seconds)

    # ---- Observer -----------------------------------------------------

    def published(self, item: object, incident_id: str | None) -> None:
        if not isinstance(item, core.PublishCallEvent):
            return
        queue = str(item.detail.get("queue", ""))
        stage = item.stage
        if stage is core.CallStage.ARRIVED:
            self._arrivals[item.call_id] = (item.at, queue)
            self.arrived.labels(queue=queue).inc()
            return
        arrived_at, first_queue = self._arrivals.get(item.call_id, (item.at, queue))
        queue = queue or first_queue
        if stage is core.CallStage.ANSWERED:
            if item.call_id in self._arrivals:  # the first answer only
                self.answer_seconds.labels(queue=queue).observe(max(0.0, item.at - arrived_at))
                self.answered.labels(queue=queue).inc()
                del self._arrivals[item.call_id]
        elif stage is core.CallStage.ABANDONED:
            self.abandoned.labels(queue=queue).inc()
            self.abandon_seconds.labels(queue=queue).observe(max(0.0, item.at - arrived_at))
            self._arrivals.pop(item.call_id, None)
        elif stage is core.CallStage.OVERFLOWED:
            self.overflowed.labels(queue=queue).inc()
        elif stage is core.CallStage.OFFER_FAILED:
            self.offer_failures.labels(reason=str(item.detail.get("reason", "unknown"))).inc()
        elif stage is core.CallStage.HUNG_UP:
            self._arrivals.pop(item.call_id, None)

    def call_arrived(self, event: core.CallerArrived, at: float, incident_id: str) -> None:
        return None  # counted from the ARRIVED timeline entry, which carries the queue

    def recording_done(self, call_id: str, name: str, incident_id: str | None) -> None:
        return None  # a missing file is counted by the journal (on_recording_missing)

    def command_failed(self, command: str) -> None:
        self.command_failures.labels(command=command).inc()
