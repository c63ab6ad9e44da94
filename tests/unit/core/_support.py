"""Builders and a small driver for the core's tests (no mocks: a real core)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from siaga_pbx.core import (
    CallerArrived,
    CallerIdentity,
    CallStage,
    CentreConfig,
    Command,
    Distributor,
    Event,
    PublishCallEvent,
    QueueConfig,
    Strategy,
    TakerConfig,
)


def taker(tid: str, *queues: str, logged_in: bool = True) -> TakerConfig:
    return TakerConfig(tid, f"PJSIP/{tid}", queues or ("main",), logged_in)


def queue(name: str = "main", **kw: object) -> QueueConfig:
    """A queue with quiet defaults: linear, no reassurance prompts."""
    kw.setdefault("strategy", Strategy.LINEAR)
    kw.setdefault("reassurance_every_s", None)
    return QueueConfig(name, **kw)  # type: ignore[arg-type]


def centre(queues: Sequence[QueueConfig] = (), takers: Sequence[TakerConfig] = ()) -> CentreConfig:
    return CentreConfig(
        queues=tuple(queues) or (queue(),),
        takers=tuple(takers) or (taker("t1"), taker("t2")),
    )


def who(number: str = "0811000001") -> CallerIdentity:
    return CallerIdentity(number=number)


def arrived(call_id: str, number: str = "0811000001", q: str = "main") -> CallerArrived:
    return CallerArrived(call_id, who(number), q)


def offer(call_id: str, n: int) -> str:
    return f"siaga-offer-{call_id}-{n}"


def ring_timer(call_id: str, n: int) -> str:
    return f"siaga-ring-{offer(call_id, n)}"


def ev(call_id: str, stage: CallStage, at: float, **detail: str | float | bool) -> PublishCallEvent:
    return PublishCallEvent(call_id, stage, at, dict(detail))


class Driver:
    """A core plus a clock; ``feed`` returns the commands of one event."""

    def __init__(self, config: CentreConfig | None = None, seed: int = 0) -> None:
        self.core = Distributor(config or centre(), seed=seed)
        self.now = 0.0

    def feed(self, event: Event, at: float | None = None) -> list[Command]:
        if at is not None:
            self.now = at
        return self.core.handle(event, self.now)

    def status(self, taker_id: str) -> str:
        for t in self.takers():
            if t["id"] == taker_id:
                return str(t["status"])
        return "absent"

    def takers(self) -> list[dict[str, Any]]:
        return self.core.snapshot(self.now)["takers"]

    def waiting(self, q: str = "main") -> list[dict[str, Any]]:
        snap = self.core.snapshot(self.now)
        for entry in snap["queues"]:
            if entry["name"] == q:
                return list(entry["waiting"])
        raise KeyError(q)

    def connected(self, q: str = "main") -> list[dict[str, Any]]:
        snap = self.core.snapshot(self.now)
        for entry in snap["queues"]:
            if entry["name"] == q:
                return list(entry["connected"])
        raise KeyError(q)
