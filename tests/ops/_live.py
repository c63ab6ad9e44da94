"""A real distribution core in a known state, watched by the service's ``Metrics``.

``LiveCentre`` feeds a real ``core.Distributor`` on a clock of its own and hands
what the core publishes to ``Metrics`` the way ``CallService`` does (timeline
entries to ``published``, the live snapshot read at scrape time), and fires the
timers the core starts when the clock passes them. ``busy_centre`` plays one
short 112 story, so that a scrape has callers waiting, a connected call, an
abandon, an overflow, a pending callback, a failed offer and a failed command,
with waits known to the second.

The story (``CENTRE``: queue main overflows to backup after 60 s; taker t1 works
both queues, t2 is logged out, t3 works main):

====  ======================================================================
t     what happens
====  ======================================================================
0     c1 arrives in main; t1 rings
2     t1 answers c1 (answer time 2 s); c1 is connected, t1 on_call
5     c2 arrives in main; t3 rings
5.5   t3's handset is busy (an offer failure); c2 waits
6     t3 logs out
8     c4 arrives in main and waits
11    c4 hangs up (abandoned after 3 s; a callback is pending from 11)
30    c3 arrives in main and waits; its greeting cannot be played (a failed command)
65    c2's overflow timer fires: c2 moves to backup
70    the scrape: main has c3 waiting (40 s), backup has c2 waiting (65 s)
====  ======================================================================
"""

from __future__ import annotations

import prometheus_client

from siaga_pbx import core
from siaga_pbx.adapters.metrics import Metrics

CENTRE = core.CentreConfig(
    queues=(
        core.QueueConfig(
            "main",
            strategy=core.Strategy.LINEAR,
            reassurance_every_s=None,
            overflow=core.Overflow(after_s=60.0, queue="backup"),
        ),
        core.QueueConfig("backup", strategy=core.Strategy.LINEAR, reassurance_every_s=None),
    ),
    takers=(
        core.TakerConfig("t1", "PJSIP/t1", ("main", "backup")),
        core.TakerConfig("t2", "PJSIP/t2", ("main",), logged_in=False),
        core.TakerConfig("t3", "PJSIP/t3", ("main",)),
    ),
)


class LiveCentre:
    """A real core on a test clock, its published state routed to ``Metrics``."""

    def __init__(self, config: core.CentreConfig = CENTRE) -> None:
        self.core = core.Distributor(config)
        self.metrics = Metrics()
        self.now = 0.0
        self.reconnects = 0
        self.timers: dict[str, float] = {}  # timer id -> when it fires
        self.rings: dict[str, str] = {}  # call id -> attempt id of its latest ring
        self.prompts: dict[str, core.PlayPrompt] = {}  # call id -> its latest prompt
        self.metrics.watch(
            lambda: self.core.snapshot(self.now),
            lambda: {"siaga_outbox_pending": 0.0, "siaga_ari_connected": 1.0},
            counters=lambda: {"siaga_ari_reconnects_total": float(self.reconnects)},
            clock=lambda: self.now,
        )

    def __repr__(self) -> str:
        return f"LiveCentre(now={self.now}, timers={sorted(self.timers)})"

    def feed(self, event: core.Event, at: float) -> None:
        """Move the clock to ``at`` (firing due timers first) and feed one event."""
        self.advance(at)
        self._run(self.core.handle(event, self.now))

    def advance(self, to: float) -> None:
        """Fire every timer due by ``to``, in time order, then set the clock to ``to``."""
        while self.timers:
            timer_id, when = min(self.timers.items(), key=lambda item: item[1])
            if when > to:
                break
            del self.timers[timer_id]
            self.now = max(self.now, when)
            self._run(self.core.handle(core.TimerFired(timer_id), self.now))
        self.now = to

    def _run(self, commands: list[core.Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, core.StartTimer):
                self.timers[cmd.timer_id] = cmd.at
            elif isinstance(cmd, core.CancelTimer):
                self.timers.pop(cmd.timer_id, None)
            elif isinstance(cmd, core.RingHandset):
                self.rings[cmd.call_id] = cmd.attempt_id
            elif isinstance(cmd, core.PlayPrompt):
                self.prompts[cmd.call_id] = cmd
            elif isinstance(cmd, core.PublishCallEvent):
                self.metrics.published(cmd, None)

    def arrive(self, call_id: str, at: float, queue: str = "main") -> None:
        """A 112 caller reaches the queue."""
        number = "0811" + call_id.encode().hex()
        self.feed(core.CallerArrived(call_id, core.CallerIdentity(number=number), queue), at)

    def answer(self, call_id: str, at: float) -> None:
        """The handset ringing for ``call_id`` answers."""
        self.feed(core.HandsetAnswered(self.rings[call_id]), at)

    def ring_fails(self, call_id: str, at: float, reason: core.HandsetFailure) -> None:
        """The handset ringing for ``call_id`` fails (busy, no answer, ...)."""
        self.feed(core.HandsetFailed(self.rings[call_id], reason), at)

    def prompt_fails(self, call_id: str, at: float) -> None:
        """Asterisk cannot play the caller's latest prompt: counted and fed back, as the
        service's lanes do with any failed command."""
        cmd = self.prompts[call_id]
        self.metrics.command_failed(type(cmd).__name__)
        self.feed(core.CommandFailed(cmd, "no such sound"), at)

    def hang_up(self, call_id: str, at: float) -> None:
        """The caller hangs up."""
        self.feed(core.CallerHungUp(call_id), at)

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of the registry, as a scrape would read it."""
        return self.metrics.registry.get_sample_value(name, labels)

    def scrape(self) -> str:
        """The /metrics text of this centre now."""
        return prometheus_client.generate_latest(self.metrics.registry).decode()


def busy_centre() -> LiveCentre:
    """The centre of the module docstring's story, at t = 70 s."""
    live = LiveCentre()
    live.arrive("c1", 0.0)
    live.answer("c1", 2.0)
    live.arrive("c2", 5.0)
    live.ring_fails("c2", 5.5, core.HandsetFailure.BUSY)
    live.feed(core.TakerLoggedOut("t3"), 6.0)
    live.arrive("c4", 8.0)
    live.hang_up("c4", 11.0)
    live.arrive("c3", 30.0)
    live.prompt_fails("c3", 30.0)
    live.advance(70.0)
    return live
