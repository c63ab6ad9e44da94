"""Hypothesis drives a real core through random event sequences and checks the
invariants of a 112 centre after every step, against a model of the world
built only from the commands the core issued and the events we fed it."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from siaga_pbx.core import (
    AddCallback,
    CallerArrived,
    CallerHungUp,
    CallerIdentity,
    CallStage,
    CancelRing,
    CancelTimer,
    CentreConfig,
    Command,
    CommandFailed,
    ConfigChanged,
    ConnectCall,
    Distributor,
    EndCall,
    Event,
    HandsetAnswered,
    HandsetFailed,
    HandsetFailure,
    HandsetHungUp,
    Overflow,
    PlayPrompt,
    PromptFinished,
    PublishCallEvent,
    PublishTakerState,
    QueueConfig,
    RedirectCaller,
    ReleaseHandset,
    RemoteProtocolError,
    RingHandset,
    StartTimer,
    StopPrompt,
    Strategy,
    TakerDeviceChanged,
    TakerLoggedIn,
    TakerLoggedOut,
    TakerPaused,
    TakerUnpaused,
    TimerFired,
)

from ._support import taker

TAKERS = ("t1", "t2", "t3", "t4", "t5")
NUMBERS = ("", "0811000001", "0811000002", "0811000003", "0812999999")


def _configs(strategy: Strategy) -> list[CentreConfig]:
    """Three centres to switch between live: queues, takers and overflow differ."""
    main = QueueConfig(
        "main",
        strategy=strategy,
        ring_timeout_s=15.0,
        retry_delay_s=2.0,
        wrapup_s=5.0,
        max_misses=2,
        reassurance_every_s=30.0,
        announce_position=True,
        overflow=Overflow(after_s=60.0, queue="backup", when_no_takers=False),
    )
    backup = QueueConfig(
        "backup",
        strategy=Strategy.RINGALL,
        ring_timeout_s=10.0,
        retry_delay_s=0.0,
        overflow=Overflow(after_s=90.0, dial="PJSIP/112@nb"),
    )
    a = CentreConfig(
        queues=(main, backup),
        takers=(
            taker("t1"),
            taker("t2", "main", "backup"),
            taker("t3", "backup"),
            taker("t4", logged_in=False),
        ),
    )
    main_b = QueueConfig(
        "main",
        strategy=Strategy.RRMEMORY,
        requeue_dropped_at_head=False,
        overflow=Overflow(queue="backup"),
        reassurance_every_s=None,
    )
    backup_b = QueueConfig(
        "backup", strategy=strategy, overflow=Overflow(queue="main"), wrapup_s=0.0, max_misses=1
    )
    b = CentreConfig(
        queues=(main_b, backup_b),
        takers=(taker("t1"), taker("t2", "main", "backup"), taker("t4"), taker("t5", "backup")),
    )
    c = CentreConfig(
        queues=(QueueConfig("main", strategy=Strategy.RANDOM),), takers=(taker("t1"), taker("t2"))
    )
    return [a, b, c]


class CentreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.calls = 0
        self.offer_seq = 0  # global order of first offers
        # the world, as our events and the core's commands made it
        self.timers: dict[str, float] = {}
        self.plays: dict[str, str] = {}  # playback id -> call id
        self.rings: dict[str, tuple[str, str]] = {}  # ringing attempt -> (call, taker)
        self.answered: dict[str, tuple[str, str]] = {}  # off-hook handset -> (call, taker)
        self.bridged: dict[str, str] = {}  # call -> attempt
        self.attempts: dict[str, tuple[str, str]] = {}  # every attempt ever rung
        self.gone: set[str] = set()  # caller channels that hung up
        self.redirected: set[str] = set()  # callers handed to the backup centre
        self.terminal: dict[str, CallStage] = {}
        self.arrivals: list[tuple[str, str, int]] = []  # (call, queue, priority) in order
        self.first_offer: dict[str, int] = {}
        self.disturbed: set[str] = set()  # moved or requeued before a first offer
        self.device: dict[str, tuple[bool, bool]] = {}
        self.status: dict[str, str] = {}
        self.sent: list[Command] = []  # commands the shell may report as failed

    @initialize(strategy=st.sampled_from(Strategy), seed=st.integers(0, 3))
    def start(self, strategy: Strategy, seed: int) -> None:
        self.configs = _configs(strategy)
        self.core = Distributor(self.configs[0], seed=seed)
        self.status = {t["id"]: t["status"] for t in self.core.snapshot(0.0)["takers"]}

    # ---- feeding ----------------------------------------------------------------

    def feed(self, event: Event) -> list[Command]:
        cmds = self.core.handle(event, self.now)
        for cmd in cmds:
            self.apply(cmd)
        return cmds

    def apply(self, cmd: Command) -> None:
        if isinstance(cmd, RingHandset | ConnectCall | PlayPrompt | RedirectCaller | StartTimer):
            self.sent.append(cmd)
        match cmd:
            case RingHandset(attempt_id=aid, call_id=call, taker_id=tid):
                assert self.status.get(tid) == "available", f"{tid} rung while {self.status}"
                assert self.device.get(tid, (True, False)) == (True, False), "handset not free"
                busy = [a for a, (_, t) in (self.rings | self.answered).items() if t == tid]
                assert not busy, f"{tid} offered {call} while busy with {busy}"
                assert call not in self.gone
                self.rings[aid] = self.attempts[aid] = (call, tid)
                if call not in self.first_offer:
                    self.check_fifo(call)
                    self.offer_seq += 1
                    self.first_offer[call] = self.offer_seq
            case CancelRing(attempt_id=aid):
                self.rings.pop(aid, None)
            case ConnectCall(call_id=call, attempt_id=aid):
                assert call not in self.bridged, f"{call} connected twice"
                assert aid in self.answered, "connected a handset that never answered"
                assert call not in self.gone
                self.bridged[call] = aid
            case ReleaseHandset(attempt_id=aid):
                self.answered.pop(aid, None)
                self.bridged = {c: a for c, a in self.bridged.items() if a != aid}
            case EndCall(call_id=call):
                assert call in self.gone, "the centre cut a caller off"
                self.bridged.pop(call, None)
            case RedirectCaller(call_id=call):
                assert call not in self.gone
                self.redirected.add(call)
            case PublishCallEvent(call_id=call, stage=stage):
                if stage in (CallStage.ABANDONED, CallStage.HUNG_UP):
                    assert call not in self.terminal, f"{call} ended twice"
                    self.terminal[call] = stage
                moved = stage in (CallStage.REQUEUED, CallStage.OVERFLOWED)
                if moved and call not in self.first_offer:
                    self.disturbed.add(call)
            case AddCallback(entry=entry):
                assert self.terminal.get(entry.call_id) is CallStage.ABANDONED
            case PublishTakerState(taker_id=tid, status=status):
                self.status[tid] = status.value
            case StartTimer(timer_id=tid, at=at):
                self.timers[tid] = at
            case CancelTimer(timer_id=tid):
                self.timers.pop(tid, None)
            case PlayPrompt(playback_id=pid, call_id=call):
                self.plays[pid] = call
            case StopPrompt(playback_id=pid):
                self.plays.pop(pid, None)
            case _:
                pass

    def check_fifo(self, call: str) -> None:
        """Nobody of the same queue and priority who arrived earlier and is
        still waiting, undisturbed, has gone without a first offer."""
        info = {c: (q, p) for c, q, p in self.arrivals}
        if call in self.disturbed or call not in info:
            return
        for earlier, q, p in self.arrivals:
            if earlier == call:
                return
            if (q, p) != info[call] or earlier in self.disturbed:
                continue
            if earlier in self.gone or earlier in self.redirected:
                continue
            assert earlier in self.first_offer, f"{call} offered before earlier {earlier}"

    # ---- rules: callers ------------------------------------------------------

    @rule(number=st.sampled_from(NUMBERS), queue=st.sampled_from(("main", "backup", "nope")))
    def caller_arrives(self, number: str, queue: str) -> None:
        self.calls += 1
        call = f"c{self.calls}"
        cmds = self.feed(CallerArrived(call, CallerIdentity(number), queue))
        arrived = next(c for c in cmds if isinstance(c, PublishCallEvent))
        self.arrivals.append((call, str(arrived.detail["queue"]), int(arrived.detail["priority"])))

    @rule(data=st.data())
    def caller_hangs_up(self, data: st.DataObject) -> None:
        live = [c for c, _, _ in self.arrivals if c not in self.gone]
        if live:
            call = data.draw(st.sampled_from(live))
            self.gone.add(call)
            self.feed(CallerHungUp(call))

    @rule(data=st.data())
    def prompt_ends(self, data: st.DataObject) -> None:
        if self.plays:
            pid = data.draw(st.sampled_from(sorted(self.plays)))
            self.feed(PromptFinished(self.plays.pop(pid), pid))

    # ---- rules: handsets -----------------------------------------------------

    @rule(data=st.data(), stale=st.booleans())
    def handset_answers(self, data: st.DataObject, stale: bool) -> None:
        pool = self.attempts if stale else self.rings
        if pool:
            aid = data.draw(st.sampled_from(sorted(pool)))
            self.rings.pop(aid, None)
            self.answered[aid] = self.attempts[aid]
            self.feed(HandsetAnswered(aid))

    @rule(data=st.data(), reason=st.sampled_from(HandsetFailure))
    def handset_fails(self, data: st.DataObject, reason: HandsetFailure) -> None:
        if self.rings:
            aid = data.draw(st.sampled_from(sorted(self.rings)))
            del self.rings[aid]
            self.feed(HandsetFailed(aid, reason))

    @rule(data=st.data(), cause=st.sampled_from((16, 41)))
    def handset_hangs_up(self, data: st.DataObject, cause: int) -> None:
        pool = self.answered | self.rings
        if pool:
            aid = data.draw(st.sampled_from(sorted(pool)))
            self.answered.pop(aid, None)
            self.rings.pop(aid, None)
            ended = [c for c, a in self.bridged.items() if a == aid]
            if ended and cause == 16:
                # A plain BYE from the taker ends a connected call: the call
                # is over by the taker's choice, not cut off by the centre.
                self.gone.update(ended)
            self.bridged = {c: a for c, a in self.bridged.items() if a != aid}
            self.feed(HandsetHungUp(aid, cause))

    @rule(tid=st.sampled_from(TAKERS), reachable=st.booleans(), in_use=st.booleans())
    def device_changes(self, tid: str, reachable: bool, in_use: bool) -> None:
        self.device[tid] = (reachable, in_use)
        self.feed(TakerDeviceChanged(tid, reachable, in_use))

    # ---- rules: takers, time, config, failures -------------------------------

    @rule(tid=st.sampled_from(TAKERS), kind=st.sampled_from(("in", "out", "pause", "unpause")))
    def taker_request(self, tid: str, kind: str) -> None:
        events: dict[str, Event] = {
            "in": TakerLoggedIn(tid),
            "out": TakerLoggedOut(tid),
            "pause": TakerPaused(tid, "break"),
            "unpause": TakerUnpaused(tid),
        }
        event = events[kind]
        before = self.core.snapshot(self.now)
        try:
            self.feed(event)
        except RemoteProtocolError:
            assert self.core.snapshot(self.now) == before, "a refused request changed state"

    @rule(data=st.data())
    def timer_fires(self, data: st.DataObject) -> None:
        if self.timers:
            tid = data.draw(st.sampled_from(sorted(self.timers)))
            self.now = max(self.now, self.timers.pop(tid))
            self.feed(TimerFired(tid))

    @rule(dt=st.floats(0.0, 120.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(which=st.integers(0, 2))
    def config_changes(self, which: int) -> None:
        self.feed(ConfigChanged(self.configs[which]))

    @rule(data=st.data())
    def command_fails(self, data: st.DataObject) -> None:
        if not self.sent:
            return
        cmd = data.draw(st.sampled_from(self.sent[-12:]))
        match cmd:
            case RingHandset(attempt_id=aid):
                if aid not in self.rings:
                    return  # it did ring: it cannot also have failed
                del self.rings[aid]
            case ConnectCall(call_id=call, attempt_id=aid):
                if self.bridged.get(call) != aid:
                    return
                del self.bridged[call]
            case RedirectCaller(call_id=call):
                if call in self.gone or call not in self.redirected:
                    return
                self.redirected.discard(call)
            case StartTimer(timer_id=tid):
                if self.timers.get(tid) is None:
                    return
                del self.timers[tid]
            case PlayPrompt(playback_id=pid):
                if self.plays.pop(pid, None) is None:
                    return
        self.feed(CommandFailed(cmd, "injected"))

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def no_caller_is_lost(self) -> None:
        """Every caller is present in the core, or ended, or redirected."""
        snap = self.core.snapshot(self.now)
        json.dumps(snap)
        present: set[str] = set()
        connected: dict[str, Any] = {}
        for q in snap["queues"]:
            present.update(w["call_id"] for w in q["waiting"])
            connected.update((c["call_id"], c["taker_id"]) for c in q["connected"])
        present.update(connected)
        for call, _, _ in self.arrivals:
            if call in self.gone:
                assert call not in present
                assert call in self.terminal or call in self.redirected, f"{call} vanished"
            else:
                assert (call in present) != (call in self.redirected), f"{call} lost"
        assert set(connected) == set(self.bridged), "core and bridges disagree"

    @invariant()
    def handsets_serve_one_caller(self) -> None:
        """No handset rings or talks for two callers, and none is left off-hook."""
        by_taker: dict[str, list[str]] = {}
        for aid, (_, tid) in (self.rings | self.answered).items():
            by_taker.setdefault(tid, []).append(aid)
        assert all(len(v) == 1 for v in by_taker.values()), by_taker
        for aid, (call, _) in self.answered.items():
            assert self.bridged.get(call) == aid, f"handset {aid} left off-hook"


CentreMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("SIAGA_CORE_EXAMPLES", "400")),
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestCentreInvariants(CentreMachine.TestCase):  # type: ignore[valid-type,misc]
    """Random event sequences never break the centre's invariants."""
