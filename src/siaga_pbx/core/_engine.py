"""The call-distribution core of a 112 centre: feed an event, get what to do.

Theory of operation
===================

``Distributor.handle(event, now)`` is the whole interface. It changes the
core's state and returns the commands the I/O shell must carry out, in order.
Nothing here does I/O or reads a clock: time is the ``now`` argument, timers
are ``StartTimer``/``CancelTimer`` commands that come back as ``TimerFired``,
and a command the shell could not carry out comes back as ``CommandFailed``.

Every ``handle`` call has two steps:
1. apply the event (callers, offers, takers change);
2. *settle*: overflow callers whose queue has nobody logged in, then run the
   pure assignment step (``_assign.assign_offers``) and ring the handsets it
   chose. Because this runs after every event, a taker who becomes free, a
   caller who arrives or a retry delay that ends are all served the same way.

Invariants (checked by the hypothesis tests):
- A 112 caller is never rejected and never dropped by the centre. Every caller
  ends as answered-then-hung-up (HUNG_UP), abandoned (ABANDONED + AddCallback)
  or redirected to a backup centre (OVERFLOWED + RedirectCaller); until then
  they are waiting, ringing or connected. A queue with no overflow target
  keeps its callers waiting for as long as it takes. If the *taker* ends a
  call, the caller's side stays up and goes back to the queue (at its head
  when ``requeue_dropped_at_head``): the normal end of a call is the caller
  hanging up first.
- A handset is offered at most one caller at a time; a caller is connected to
  at most one taker at a time. Only AVAILABLE takers whose handset is
  reachable, not in use and not blocked are rung.
- Within a queue and a priority, callers are offered in order of arrival.
  Service order is (band, priority, arrival): see ``_callers``.

Callers. ``CallerArrived`` answers the call, plays the greeting and queues the
caller; the ringing of takers starts at once, in parallel with the greeting.
When the greeting ends the caller hears hold (ringback or music). Every
``reassurance_every_s`` hold is interrupted for a reassurance prompt (and the
queue position, if configured), then resumed. The answer stops whatever the
caller hears and bridges the call (``ConnectCall``).

Offers. Each ring of a handset is an *offer* with a deterministic attempt id
``siaga-offer-{call}-{n}`` and its own ring timer. An offer ends by:
- answer: the call is connected; under ringall the other offers are
  withdrawn;
- no answer (ring timer, or HandsetFailed NO_ANSWER/REJECTED): a *miss*. The
  taker's consecutive misses grow; at ``max_misses`` the taker is paused with
  reason "missed-calls". The caller rings nobody for ``retry_delay_s`` and
  then moves on to a taker not yet tried in this round;
- failure (HandsetFailed BUSY/UNREACHABLE, or RingHandset failed): not a
  miss. The taker is *blocked*: not rung until device state reports the
  handset reachable and idle, or for at most ``DEVICE_RECHECK_S`` (device
  state only reports changes, so we must not wait for it forever). The
  caller moves on at once;
- withdrawal by us (caller hung up, another taker answered, taker logged out
  or paused, taker removed from the config): no consequence for the taker.

Takers. The status machine is the table in ``_takers``. Requests (log in/out,
pause/unpause) that the table refuses raise ``RemoteProtocolError`` before
anything changes. A log-out or pause during a call is kept for the call's
end. A call's end leads to WRAP_UP for ``wrapup_s`` (0: straight to
AVAILABLE).

Overflow. A caller who waited ``overflow.after_s`` in their current queue, or
whose queue has nobody logged in (``when_no_takers``; checked at every
settle), moves to the overflow queue (keeping their place by arrival) or is
redirected to the backup centre's dial string. A caller ringing a taker when
their overflow time comes overflows only if that ring fails. Against loops, a
caller never overflows by time into a queue they already visited, and by
"no takers" only into an unvisited queue or one that has takers logged in;
each dial target is tried once.

Races and stale ids. Asterisk and we act concurrently, so events about things
we have already finished are normal, and are answered safely:
- ``HandsetAnswered`` for an offer we withdrew or that timed out (the caller
  left, another taker won a ringall race, the taker logged out): the handset
  is released (``ReleaseHandset``); a caller is never connected twice. A
  repeated answer for an already connected call is ignored.
- ``HandsetFailed``/``HandsetRinging`` for an offer already ended: ignored.
- ``HandsetHungUp`` for an unknown or released handset: ignored. For a
  still-ringing offer it counts as a no-answer.
- ``HandsetLost`` (the handset's SIP contact stopped answering qualify, so the
  phone is gone without a BYE): for a connected call a drop like any other
  (the caller back to the head of the queue, offered to someone else), with
  ``reason: handset-lost`` in TAKER_LEFT, the dead channel released and the
  taker blocked as after an unreachable ring; for a ringing offer an
  UNREACHABLE failure; for anything else ignored.
- ``TimerFired`` for a timer we cancelled or for a finished call: ignored.
- ``CallerHungUp``/``PromptFinished`` for an unknown call or an old playback:
  ignored. A caller we redirected away is forgotten when their hangup comes.
- ``TakerDeviceChanged`` for an unknown taker: remembered for when that
  taker is configured, nothing else. A repeated ``CallerArrived``: ignored.
- ``CallbackResolved`` for a callback the core does not hold (evicted from
  memory, see Callbacks, or resolved already): still published as
  ``ResolveCallback``, since the record may hold it; the record resolves only
  a callback still pending there, so a repeat changes nothing.

Handover. ``TakerHandedOver`` (from the conference core, which checked that
a dispatcher talks with the caller) ends a connected call for the taker only:
the handset is released, HANDED_OVER is published, the taker goes to wrap-up,
and the caller leaves the core without ``EndCall``: the conference core owns
the rest of the call (and its HUNG_UP). For a call not connected: ignored.

Failed commands. RingHandset: as a BUSY/UNREACHABLE failure. ConnectCall:
the handset is released and the caller goes back to the head of the queue.
PlayPrompt: as if the prompt ended (hold resumes). RedirectCaller: the caller
comes back into their queue and that dial target is not tried again.
StartTimer: wrap-up, retry and device timers fire at once rather than strand
a taker or caller; a ring timer is backed by RingHandset's own timeout; a lost
reassurance or overflow timer leaves the caller waiting (never dropped).
Other failures need nothing from the core.

Callbacks. Every abandoned caller becomes a pending callback
(``AddCallback``). PostgreSQL is the record of pending callbacks; the core
holds a bounded copy for the live state (``snapshot``): at most
``max_callbacks`` (default ``MAX_PENDING_CALLBACKS``), the most recently
abandoned ones. Past the bound the oldest leaves the core's memory only, with
no command: it stays pending in the record. ``CallbackResolved`` (from the
API) removes it and publishes ``ResolveCallback`` for the record.
``CallbacksRestored`` (read back from the record after a restart) adds the
entries the core does not hold, in order of abandonment, within the bound;
callbacks resolved lately (the last ``_RESOLVED_MEMORY``) are not taken back,
so a restore that read the record before a resolution reached it cannot
bring a resolved callback back.

Restart. ``adopt_connected_call`` and ``adopt_waiting_caller`` rebuild what
Asterisk still holds (adopt connected calls first, then waiting callers in
order of arrival), ``adopt_callback`` (or the event ``CallbacksRestored``)
restores pending callbacks, and ``resume`` publishes taker states and starts
offering.

Automatic callbacks (ring a free taker for a pending callback, then dial the
caller back) are the 112-handling work still to come: callbacks are kept in state, shown in
``snapshot`` and resolved by ``CallbackResolved``.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from enum import StrEnum
from typing import Any, Final, assert_never

from .. import ids
from ._assign import Offer, assign_offers
from ._callers import HEAD_BAND, Caller, CallerState
from ._commands import (
    AddCallback,
    AnswerCaller,
    CallStage,
    CancelRing,
    CancelTimer,
    Command,
    ConnectCall,
    EndCall,
    PlayPrompt,
    PublishCallEvent,
    PublishTakerState,
    RedirectCaller,
    ReleaseHandset,
    ResolveCallback,
    RingHandset,
    StartHold,
    StartTimer,
    StopHold,
    StopPrompt,
    TakerStatus,
)
from ._config import CentreConfig, QueueConfig, TakerConfig
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    CallbackEntry,
    CallbackResolved,
    CallbacksRestored,
    CallerArrived,
    CallerHungUp,
    CallerIdentity,
    CommandFailed,
    ConfigChanged,
    Event,
    HandsetAnswered,
    HandsetFailed,
    HandsetFailure,
    HandsetHungUp,
    HandsetLost,
    HandsetRinging,
    PromptFinished,
    TakerDeviceChanged,
    TakerHandedOver,
    TakerLoggedIn,
    TakerLoggedOut,
    TakerPaused,
    TakerUnpaused,
    TimerFired,
)
from ._q850 import NORMAL_CLEARING
from ._takers import TAKER_TRANSITIONS, Taker, TakerInput

DEVICE_RECHECK_S: Final = 30.0  # a blocked taker is rung again after this at the latest
MISSED_CALLS: Final = "missed-calls"  # pause reason after max_misses
HANDSET_LOST: Final = "handset-lost"  # the drop reason when a handset vanished mid-call
_REDIRECT_MEMORY: Final = 1000  # redirected callers remembered, for RedirectCaller failures
# Pending callbacks held in memory at most (the record, PostgreSQL, keeps all):
# about 200 bytes each, so the live list stays well under 1 MB.
MAX_PENDING_CALLBACKS: Final = 1000
_RESOLVED_MEMORY: Final = 1000  # resolved callback ids remembered, against stale restores

_I = TakerInput
_Detail = dict[str, str | int | float | bool]


class _Timer(StrEnum):
    RING = "ring"  # key: attempt id
    RETRY = "retry"  # key: call id
    REASSURE = "reassure"  # key: call id
    OVERFLOW = "overflow"  # key: call id
    WRAPUP = "wrapup"  # key: taker id
    DEVICE = "device"  # key: taker id


def _on_duty(t: Taker) -> bool:
    """Logged in and configured: the taker staffs their queues (even if busy)."""
    return t.status is not TakerStatus.OFFLINE and not t.removed


def _timer_id(kind: _Timer, key: str) -> str:
    return ids.core_timer_id(kind.value, key)


class Distributor:
    """Waiting callers, call takers and offers of one 112 centre. No I/O."""

    def __init__(
        self, config: CentreConfig, seed: int = 0, *, max_callbacks: int = MAX_PENDING_CALLBACKS
    ) -> None:
        if max_callbacks < 1:
            raise ValueError("max_callbacks must be at least 1")
        self._config = config
        self._max_callbacks = max_callbacks
        self._queues = {q.name: q for q in config.queues}
        self._rng = random.Random(seed)  # noqa: S311 - fair spreading of calls, not secrecy
        self._devices: dict[str, tuple[bool, bool]] = {}  # taker id -> (reachable, in_use)
        self._takers: dict[str, Taker] = {
            t.taker_id: self._new_taker(t, None) for t in config.takers
        }
        self._callers: dict[str, Caller] = {}
        self._offers: dict[str, tuple[str, str]] = {}  # live attempt id -> (call id, taker id)
        self._connected: dict[str, str] = {}  # connected attempt id -> call id
        self._timers: dict[str, tuple[_Timer, str]] = {}  # running timer id -> (kind, key)
        self._redirected: dict[str, Caller] = {}
        # Pending callbacks in order of abandonment, oldest first (see Callbacks).
        self._callbacks: dict[str, CallbackEntry] = {}
        self._resolved: OrderedDict[str, None] = OrderedDict()
        # caller number -> last arrival, oldest first (see _new_caller)
        self._last_seen: OrderedDict[str, float] = OrderedDict()
        self._rr_memory: dict[str, str] = {}  # queue -> taker rung last
        self._seq = 0
        self._head_seq = 0

    # ---- the interface -------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Command]:
        """Apply one event; return the commands to carry out, in order."""
        match event:
            case CallerArrived():
                cmds = self._caller_arrived(event, now)
            case CallerHungUp():
                cmds = self._caller_hung_up(event, now)
            case PromptFinished():
                cmds = self._prompt_finished(event.call_id, event.playback_id, now, played=True)
            case HandsetRinging():
                cmds = []  # informational: the ring timer already runs
            case HandsetAnswered():
                cmds = self._handset_answered(event.attempt_id, now)
            case HandsetFailed():
                cmds = self._handset_failed(event.attempt_id, event.reason, now)
            case HandsetHungUp():
                cmds = self._handset_hung_up(event, now)
            case HandsetLost():
                cmds = self._handset_lost(event, now)
            case TakerDeviceChanged():
                cmds = self._device_changed(event)
            case TakerLoggedIn():
                cmds = self._request(event.taker_id, _I.LOG_IN, now)
            case TakerLoggedOut():
                cmds = self._request(event.taker_id, _I.LOG_OUT, now)
            case TakerPaused():
                cmds = self._request(event.taker_id, _I.PAUSE, now, event.reason)
            case TakerUnpaused():
                cmds = self._request(event.taker_id, _I.UNPAUSE, now)
            case TimerFired():
                entry = self._timers.pop(event.timer_id, None)
                cmds = [] if entry is None else self._timer_fired(*entry, now)
            case ConfigChanged():
                cmds = self._config_changed(event.config, now)
            case CommandFailed():
                cmds = self._command_failed(event.command, now)
            case CallbackResolved():
                cmds = self._callback_resolved(event, now)
            case CallbacksRestored():
                for restored in event.entries:
                    self.adopt_callback(restored)
                cmds = []
            case TakerHandedOver():
                cmds = self._handed_over(event.call_id, now)
            case _:  # pragma: no cover - exhaustive
                assert_never(event)
        return cmds + self._settle(now)

    # ---- read-only views -------------------------------------------------------

    def snapshot(self, now: float) -> dict[str, list[dict[str, Any]]]:
        """JSON-safe live state: queues (waiting callers in service order, and
        connected calls), takers, pending callbacks."""
        queues: list[dict[str, Any]] = []
        for name in self._queues:
            waiting = self._waiting_in(name)
            connected = [c for c in self._callers.values() if c.queue == name and c.taker_id]
            queues.append(
                {
                    "name": name,
                    "strategy": self._queues[name].strategy.value,
                    "waiting": [
                        {
                            "call_id": c.call_id,
                            "number": c.identity.best_number,
                            "priority": c.priority,
                            "wait_s": now - c.arrived_at,
                            "state": c.state.value,
                            "position": i,
                            "at_head": c.band == HEAD_BAND,
                        }
                        for i, c in enumerate(waiting, start=1)
                    ],
                    "connected": [
                        {
                            "call_id": c.call_id,
                            "number": c.identity.best_number,
                            "priority": c.priority,
                            "taker_id": c.taker_id,
                            "wait_s": (c.answered_at or now) - c.arrived_at,
                            "talk_s": now - (c.answered_at or now),
                        }
                        for c in connected
                    ],
                }
            )
        takers = [
            {
                "id": t.taker_id,
                "status": t.status.value,
                "since": t.since,
                "reason": t.reason,
                "calls_taken": t.calls_taken,
                "misses": t.misses,
                "reachable": t.reachable,
                "in_use": t.in_use,
                "blocked": t.blocked,
                "call_id": t.call_id,
                "queues": list(t.config.queues),
            }
            for t in self._takers.values()
        ]
        callbacks = [
            {
                "call_id": e.call_id,
                "number": e.number,
                "queue": e.queue,
                "arrived_at": e.arrived_at,
                "abandoned_at": e.abandoned_at,
                "wait_s": e.wait_s,
                "where": e.where,
            }
            for e in self._callbacks.values()
        ]
        return {"queues": queues, "takers": takers, "callbacks": callbacks}

    def check(self, event: Event) -> None:
        """Raise ``RemoteProtocolError`` if a request from outside (a taker's
        or an admin's) would be refused now; changes nothing. The API asks
        first, so a refusal is a 4xx with the core's reason, never a 202."""
        match event:
            case TakerLoggedIn():
                self._check_request(event.taker_id, _I.LOG_IN)
            case TakerLoggedOut():
                self._check_request(event.taker_id, _I.LOG_OUT)
            case TakerPaused():
                self._check_request(event.taker_id, _I.PAUSE)
            case TakerUnpaused():
                self._check_request(event.taker_id, _I.UNPAUSE)
            case _:
                pass

    @property
    def config(self) -> CentreConfig:
        """The centre's configuration now (the one owner of it)."""
        return self._config

    @property
    def default_queue(self) -> str:
        return self._config.default_queue

    def known_calls(self) -> set[str]:
        """Every caller the core holds: waiting, ringing or connected."""
        return set(self._callers)

    def waiting_calls(self) -> list[str]:
        """Callers not connected to a taker, in order of service."""
        return [c.call_id for q in self._queues for c in self._waiting_in(q)]

    def live_offers(self) -> dict[str, str]:
        """Offers still ringing: attempt id -> call id."""
        return {aid: call for aid, (call, _taker) in self._offers.items()}

    def connected_attempts(self) -> dict[str, str]:
        """Answered offers bridged with their caller: attempt id -> call id."""
        return dict(self._connected)

    def __repr__(self) -> str:
        states = [c.state for c in self._callers.values()]
        counts: dict[str, int] = {}
        for t in self._takers.values():
            counts[t.status.value] = counts.get(t.status.value, 0) + 1
        takers = ",".join(f"{k}:{v}" for k, v in sorted(counts.items()))
        return (
            f"<Distributor waiting={states.count(CallerState.WAITING)}"
            f" ringing={states.count(CallerState.RINGING)}"
            f" connected={states.count(CallerState.CONNECTED)}"
            f" takers={takers or '-'} callbacks={len(self._callbacks)}>"
        )

    # ---- restart ------------------------------------------------------------------

    def adopt_connected_call(
        self,
        call_id: str,
        *,
        caller: CallerIdentity,
        queue: str,
        arrived_at: float,
        attempt_id: str,
        taker_id: str,
        now: float,
        answered_at: float | None = None,
    ) -> list[Command]:
        """Rebuild a call Asterisk still has bridged with ``taker_id``.

        ``answered_at``: when the taker answered, if the shell knows (talk
        time counts from it); else the adoption counts as the answer.
        A taker no longer configured keeps the call and leaves after it.
        """
        if call_id in self._callers or attempt_id in self._connected:
            raise LocalProtocolError(f"adopting call {call_id!r}: already known")
        taker = self._takers.get(taker_id)
        if taker is None:
            taker = Taker(TakerConfig(taker_id, endpoint="", queues=()), removed=True)
            taker.after_call = (_I.LOG_OUT, "")
            self._takers[taker_id] = taker
        elif taker.attempt_id is not None:
            raise LocalProtocolError(f"adopting call {call_id!r}: {taker_id!r} is busy")
        q = self._queues.get(queue) or self._default_queue()
        c = self._new_caller(call_id, caller, q, arrived_at, self._priority(q, caller, now)[0])
        answered = answered_at if answered_at is not None and answered_at <= now else now
        c.attempt_id, c.taker_id, c.answered_at = attempt_id, taker_id, answered
        self._connected[attempt_id] = call_id
        # Recovery, not a transition: whatever the taker was, they are on this call.
        taker.status, taker.since, taker.reason = TakerStatus.ON_CALL, now, ""
        taker.attempt_id, taker.call_id = attempt_id, call_id
        return [PublishTakerState(taker_id, TakerStatus.ON_CALL, now)]

    def adopt_waiting_caller(
        self,
        call_id: str,
        *,
        caller: CallerIdentity,
        queue: str,
        arrived_at: float,
        now: float,
        priority: int | None = None,
        offers_made: int = 0,
    ) -> list[Command]:
        """Rebuild a caller who was waiting; call in order of arrival.

        ``offers_made``: attempt numbers already used for this call, so new
        attempt ids do not collide with handset channels that may still exist.
        The caller was greeted before; they hear hold again.
        """
        if call_id in self._callers:
            raise LocalProtocolError(f"adopting caller {call_id!r}: already known")
        q = self._queues.get(queue) or self._default_queue()
        prio = self._priority(q, caller, arrived_at)[0] if priority is None else priority
        c = self._new_caller(call_id, caller, q, arrived_at, prio)
        c.offer_count = offers_made
        c.hold = (q.hold, q.music_class)
        return [StartHold(call_id, q.hold, q.music_class), *self._queue_timers(c, q, now)]

    def readmit_caller(
        self,
        call_id: str,
        *,
        caller: CallerIdentity,
        arrived_at: float,
        now: float,
        offers_made: int = 0,
    ) -> list[Command]:
        """Take back a caller handed over to dispatchers who have all left
        (the conference core's ``ReturnCall``): they wait again in the default
        queue, placed by their original arrival, and the next free taker is rung."""
        cmds = self.adopt_waiting_caller(
            call_id,
            caller=caller,
            queue=self.default_queue,
            arrived_at=arrived_at,
            now=now,
            offers_made=offers_made,
        )
        return cmds + self._settle(now)

    def adopt_callback(self, entry: CallbackEntry) -> None:
        """Restore a pending callback (from the record) after a restart.
        One already held, or resolved lately, is left as it is."""
        if entry.call_id in self._callbacks or entry.call_id in self._resolved:
            return
        newest = next(reversed(self._callbacks.values()), None)
        self._callbacks[entry.call_id] = entry
        if newest is not None and _abandon_order(entry) < _abandon_order(newest):
            # Older than one held: rare (a restore), so sorting here is cheap
            # enough, and keeps "oldest first" for eviction and the snapshot.
            ordered = sorted(self._callbacks.values(), key=_abandon_order)
            self._callbacks = {e.call_id: e for e in ordered}
        self._evict_callbacks()

    def holds_callback(self, call_id: str) -> bool:
        """Whether ``call_id``'s callback is pending in the core's memory."""
        return call_id in self._callbacks

    def resume(self, now: float) -> list[Command]:
        """After adopting: publish every taker's state and start offering."""
        cmds: list[Command] = [
            PublishTakerState(t.taker_id, t.status, now, t.reason) for t in self._takers.values()
        ]
        return cmds + self._settle(now)

    # ---- callers ------------------------------------------------------------------

    def _caller_arrived(self, ev: CallerArrived, now: float) -> list[Command]:
        if ev.call_id in self._callers:
            return []  # repeated event
        self._redirected.pop(ev.call_id, None)
        q = self._queues.get(ev.queue) or self._default_queue()  # never reject
        prio, repeat = self._priority(q, ev.caller, now)
        c = self._new_caller(ev.call_id, ev.caller, q, now, prio)
        greeting = self._play(c, "greeting")
        detail: _Detail = {"queue": q.name, "number": ev.caller.best_number, "priority": prio}
        detail.update({"repeat": repeat, "trunk": ev.trunk})
        arrived = [] if ev.recovered else [self._call_event(c, CallStage.ARRIVED, now, detail)]
        return [
            AnswerCaller(c.call_id, answered=ev.answered),
            *arrived,
            greeting,
            self._call_event(c, CallStage.QUEUED, now, {"queue": q.name, "priority": c.priority}),
            *self._queue_timers(c, q, now),
        ]

    def _new_caller(
        self, call_id: str, who: CallerIdentity, q: QueueConfig, arrived_at: float, prio: int
    ) -> Caller:
        self._seq += 1
        c = Caller(call_id, who, q.name, arrived_at, arrived_at, prio, self._seq, visited={q.name})
        self._callers[call_id] = c
        # Remember the number for repeat detection; forget numbers that no
        # queue would count as a repeat any more. The map is kept in order of
        # last arrival (an update moves a number to the end), so the expired
        # numbers are at its front: each arrival looks at only those, not at
        # every number of the last window. (Should time step back, an expired
        # number may linger behind a newer one; _priority checks the window
        # itself, so that never makes a repeat.)
        horizon = max(qc.priorities.repeat_window_s for qc in self._queues.values())
        seen = self._last_seen
        while seen and arrived_at - next(iter(seen.values())) > horizon:
            seen.popitem(last=False)
        if who.best_number:
            seen[who.best_number] = max(arrived_at, seen.get(who.best_number, arrived_at))
            seen.move_to_end(who.best_number)
        return c

    def _priority(self, q: QueueConfig, who: CallerIdentity, now: float) -> tuple[int, bool]:
        """(priority, is a repeat caller): the configured number priority or
        the repeat-caller priority, whichever is more urgent."""
        rules, number = q.priorities, who.best_number
        if not number:  # an empty number is nobody in particular: never a repeat
            return rules.normal, False
        prio = rules.numbers.get(number, rules.normal)
        last = self._last_seen.get(number)
        repeat = last is not None and now - last <= rules.repeat_window_s
        return (min(prio, rules.repeat_caller) if repeat else prio), repeat

    def _caller_hung_up(self, ev: CallerHungUp, now: float) -> list[Command]:
        if self._redirected.pop(ev.call_id, None) is not None:
            return []  # left us for the backup centre as planned
        c = self._callers.get(ev.call_id)
        if c is None:
            return []
        if c.attempt_id is not None:
            return self._connected_caller_left(c, ev.cause, now)
        where = "ringing" if c.offers else "waiting"
        c.overflow_due = False
        cmds: list[Command] = []
        for aid in list(c.offers):
            cmds += self._end_offer(aid, _I.RING_CANCELLED, now, cancel_ring=True)
        cmds += self._cancel_caller_timers(c)
        del self._callers[c.call_id]
        entry = CallbackEntry(c.call_id, c.identity.best_number, c.arrived_at, now, c.queue, where)
        self._resolved.pop(c.call_id, None)
        self._callbacks.pop(c.call_id, None)
        self._callbacks[c.call_id] = entry  # the newest: at the end
        self._evict_callbacks()
        detail: _Detail = {"queue": c.queue, "where": where, "wait_s": now - c.arrived_at}
        detail.update({"cause": ev.cause, "number": entry.number})
        return [
            *cmds,
            self._call_event(c, CallStage.ABANDONED, now, detail),
            AddCallback(entry),
            EndCall(c.call_id),
        ]

    # ---- callbacks -----------------------------------------------------------------

    def _callback_resolved(self, ev: CallbackResolved, now: float) -> list[Command]:
        self._callbacks.pop(ev.call_id, None)
        self._resolved[ev.call_id] = None
        self._resolved.move_to_end(ev.call_id)
        while len(self._resolved) > _RESOLVED_MEMORY:
            self._resolved.popitem(last=False)
        return [ResolveCallback(ev.call_id, ev.resolution, ev.by, now, ev.note)]

    def _evict_callbacks(self) -> None:
        """Keep at most ``max_callbacks`` in memory: the oldest leave it (the
        record keeps them pending)."""
        while len(self._callbacks) > self._max_callbacks:
            del self._callbacks[next(iter(self._callbacks))]

    def _connected_caller_left(self, c: Caller, cause: int, now: float) -> list[Command]:
        """The normal end of a call: the caller hung up first."""
        return self._connected_call_ended(c, "caller", cause, now)

    def _connected_call_ended(self, c: Caller, side: str, cause: int, now: float) -> list[Command]:
        """A connected call is over (``side`` hung up): release both sides."""
        aid, tid = c.attempt_id, c.taker_id
        assert aid is not None  # connected
        assert tid is not None
        self._connected.pop(aid, None)  # already gone when the handset hung up
        del self._callers[c.call_id]
        detail: _Detail = {"side": side, "cause": cause, "taker_id": tid}
        detail["talk_s"] = now - (c.answered_at if c.answered_at is not None else now)
        # A handset that hung up is gone already: releasing it would only
        # cost Asterisk a request for a channel it no longer has.
        cmds: list[Command] = [] if side == "taker" else [ReleaseHandset(aid)]
        cmds += [EndCall(c.call_id), self._call_event(c, CallStage.HUNG_UP, now, detail)]
        return cmds + self._cancel_caller_timers(c) + self._taker_left_call(tid, c, now)

    def _handed_over(self, call_id: str, now: float) -> list[Command]:
        """The taker left the caller with a dispatcher: the taker's call is over
        (handset released, wrap-up), the caller's is not and leaves the core
        without EndCall. Stale (not connected any more): ignored."""
        c = self._callers.get(call_id)
        if c is None or c.attempt_id is None:
            return []
        aid, tid = c.attempt_id, c.taker_id
        assert tid is not None  # connected
        del self._connected[aid]
        del self._callers[call_id]
        detail: _Detail = {"taker_id": tid, "attempt_id": aid}
        detail["talk_s"] = now - (c.answered_at if c.answered_at is not None else now)
        cmds: list[Command] = [
            ReleaseHandset(aid),
            self._call_event(c, CallStage.HANDED_OVER, now, detail),
        ]
        return cmds + self._cancel_caller_timers(c) + self._taker_left_call(tid, c, now)

    def _prompt_finished(
        self, call_id: str, playback_id: str, now: float, *, played: bool
    ) -> list[Command]:
        c = self._callers.get(call_id)
        if c is None or c.playing is None or c.playing[0] != playback_id:
            return []  # an old or stopped prompt
        prompt = c.playing[1]
        c.playing = None
        cmds: list[Command] = []
        if played and prompt == "greeting":
            cmds.append(self._call_event(c, CallStage.GREETED, now, {"queue": c.queue}))
        if c.prompt_queue:
            return [*cmds, self._play(c, c.prompt_queue.pop(0))]
        return cmds + self._start_hold(c)

    def _play(self, c: Caller, prompt: str) -> PlayPrompt:
        c.prompt_count += 1
        pid = ids.playback_id(c.call_id, prompt, c.prompt_count)
        c.playing = (pid, prompt)
        return PlayPrompt(c.call_id, pid, prompt)

    def _start_hold(self, c: Caller) -> list[Command]:
        q = self._queue_of(c)
        c.hold = (q.hold, q.music_class)
        return [StartHold(c.call_id, q.hold, q.music_class)]

    def _silence(self, c: Caller) -> list[Command]:
        """Stop whatever the caller hears (before bridging or redirecting)."""
        cmds: list[Command] = []
        if c.playing is not None:
            cmds.append(StopPrompt(c.call_id, c.playing[0]))
        if c.hold is not None:
            cmds.append(StopHold(c.call_id, c.hold[0]))
        c.playing, c.hold = None, None
        c.prompt_queue.clear()
        return cmds

    def _reassure(self, c: Caller, now: float) -> list[Command]:
        q = self._queue_of(c)
        if q.reassurance_every_s is None:
            return []
        again = self._start_timer(_Timer.REASSURE, c.call_id, now + q.reassurance_every_s)
        if c.playing is not None:
            return [again]  # still greeting (or a prompt): skip this round
        cmds: list[Command] = []
        if c.hold is not None:
            cmds.append(StopHold(c.call_id, c.hold[0]))
            c.hold = None
        if q.announce_position:
            c.prompt_queue = [f"position:{self._waiting_in(c.queue).index(c) + 1}"]
        return [*cmds, self._play(c, "reassurance"), again]

    def _requeue(self, c: Caller, reason: str, now: float) -> list[Command]:
        """A caller whose call did not hold goes back to waiting, hearing hold."""
        q = self._queue_of(c)
        c.queue = q.name  # their queue may have been removed meanwhile
        if q.requeue_dropped_at_head:
            self._head_seq += 1
            c.band, c.seq = HEAD_BAND, self._head_seq
        c.queued_at, c.not_before = now, now
        c.tried.clear()
        detail: _Detail = {"queue": c.queue, "reason": reason, "at_head": c.band == HEAD_BAND}
        return [
            self._call_event(c, CallStage.REQUEUED, now, detail),
            *self._start_hold(c),
            *self._queue_timers(c, q, now),
        ]

    # ---- offers ---------------------------------------------------------------------

    def _settle(self, now: float) -> list[Command]:
        cmds = self._overflow_unstaffed(now)
        offers = assign_offers(
            self._callers.values(),
            list(self._takers.values()),
            queues=self._queues,
            rr_memory=self._rr_memory,
            rng=self._rng,
            now=now,
        )
        for offer in offers:
            cmds += self._make_offer(offer, now)
        return cmds

    def _make_offer(self, offer: Offer, now: float) -> list[Command]:
        c = self._callers[offer.call_id]
        q = self._queue_of(c)
        if offer.reset_tried:
            c.tried.clear()
        cmds: list[Command] = []
        for tid in offer.taker_ids:
            taker = self._takers[tid]
            c.offer_count += 1
            aid = ids.offer_id(c.call_id, c.offer_count)
            taker.apply(_I.OFFER, now)
            taker.attempt_id, taker.call_id = aid, c.call_id
            c.offers[aid] = tid
            c.tried.add(tid)
            self._offers[aid] = (c.call_id, tid)
            self._rr_memory[q.name] = tid
            detail: _Detail = {"taker_id": tid, "attempt_id": aid, "queue": q.name}
            cmds += [
                RingHandset(
                    aid, c.call_id, tid, taker.config.endpoint, q.ring_timeout_s, c.identity
                ),
                self._start_timer(_Timer.RING, aid, now + q.ring_timeout_s),
                self._call_event(c, CallStage.OFFERED, now, detail),
                PublishTakerState(tid, TakerStatus.RINGING, now),
            ]
        return cmds

    def _end_offer(
        self,
        aid: str,
        how: TakerInput,
        now: float,
        *,
        cancel_ring: bool,
        failure: str = "",
        publish_taker: bool = True,
    ) -> list[Command]:
        """An offer ends unanswered: a miss, a failure or our withdrawal.

        ``how`` is the taker's input: RING_MISSED, RING_FAILED or
        RING_CANCELLED. ``failure`` (if set) is published as OFFER_FAILED.
        """
        call_id, tid = self._offers.pop(aid)
        c = self._callers[call_id]
        del c.offers[aid]
        cmds: list[Command] = [CancelRing(aid)] if cancel_ring else []
        cmds += self._cancel_timer(_Timer.RING, aid)
        if failure:
            detail: _Detail = {"taker_id": tid, "attempt_id": aid, "reason": failure}
            cmds.append(self._call_event(c, CallStage.OFFER_FAILED, now, detail))
        q = self._queue_of(c)
        taker = self._takers[tid]
        before = (taker.status, taker.reason)
        taker.apply(how, now)
        taker.attempt_id = taker.call_id = None
        if how is _I.RING_MISSED:
            taker.misses += 1
            if taker.misses >= q.max_misses:
                taker.apply(_I.PAUSE, now, MISSED_CALLS)
        if publish_taker:
            cmds += self._publish_taker(taker, before, now)
        if how is _I.RING_FAILED:
            taker.blocked = True
            cmds.append(self._start_timer(_Timer.DEVICE, tid, now + DEVICE_RECHECK_S))
        if not c.offers:
            if how is _I.RING_MISSED and q.retry_delay_s > 0:
                c.not_before = now + q.retry_delay_s
                cmds.append(self._start_timer(_Timer.RETRY, call_id, c.not_before))
            if c.overflow_due:
                c.overflow_due = False
                cmds += self._overflow(c, "wait", now, by_time=True)
        return cmds

    def _handset_answered(self, aid: str, now: float) -> list[Command]:
        if aid in self._connected:
            return []  # a repeated answer for a call already bridged
        live = self._offers.get(aid)
        if live is None:
            return [ReleaseHandset(aid)]  # withdrawn or lost the race: hang up
        call_id, tid = live
        c = self._callers[call_id]
        del self._offers[aid]
        del c.offers[aid]
        c.overflow_due = False
        cmds = self._cancel_timer(_Timer.RING, aid)
        for other in list(c.offers):  # ringall: the others stop ringing
            cmds += self._end_offer(other, _I.RING_CANCELLED, now, cancel_ring=True)
        cmds += self._silence(c)
        cmds += self._cancel_caller_timers(c)
        c.attempt_id, c.taker_id, c.answered_at = aid, tid, now
        c.tried.clear()
        self._connected[aid] = call_id
        taker = self._takers[tid]
        taker.apply(_I.ANSWER, now)
        taker.misses = 0
        taker.calls_taken += 1
        detail: _Detail = {"taker_id": tid, "attempt_id": aid, "queue": c.queue}
        detail["wait_s"] = now - c.arrived_at
        return [
            *cmds,
            ConnectCall(call_id, aid, tid),
            self._call_event(c, CallStage.ANSWERED, now, detail),
            PublishTakerState(tid, TakerStatus.ON_CALL, now),
        ]

    def _handset_failed(self, aid: str, reason: HandsetFailure, now: float) -> list[Command]:
        if aid not in self._offers:
            return []  # ended already (we cancelled it, or its timer fired)
        miss = reason in (HandsetFailure.NO_ANSWER, HandsetFailure.REJECTED)
        how = _I.RING_MISSED if miss else _I.RING_FAILED
        return self._end_offer(aid, how, now, cancel_ring=False, failure=reason.value)

    def _handset_hung_up(self, ev: HandsetHungUp, now: float) -> list[Command]:
        if ev.attempt_id in self._offers:  # gone before any answer: as a no-answer
            return self._handset_failed(ev.attempt_id, HandsetFailure.NO_ANSWER, now)
        call_id = self._connected.pop(ev.attempt_id, None)
        if call_id is None:
            return []  # a handset we released, or never knew
        c = self._callers[call_id]
        if ev.cause == NORMAL_CLEARING and not self._queue_of(c).requeue_on_taker_hangup:
            # The taker ended the call deliberately (a plain BYE): it is over.
            return self._connected_call_ended(c, "taker", ev.cause, now)
        # A drop (any other cause: network, handset failure) or a centre that
        # requeues on every taker hangup: the caller's side stays up and goes
        # back to the queue. The caller is never cut off by a failure of ours.
        return self._dropped(c, {"cause": ev.cause}, "taker-left", now)

    def _handset_lost(self, ev: HandsetLost, now: float) -> list[Command]:
        aid = ev.attempt_id
        if aid in self._offers:  # ringing a phone that is gone: as an unreachable ring
            failure = HandsetFailure.UNREACHABLE.value
            return self._end_offer(aid, _I.RING_FAILED, now, cancel_ring=True, failure=failure)
        call_id = self._connected.pop(aid, None)
        if call_id is None:
            return []  # a handset we released, or never knew
        c = self._callers[call_id]
        tid = c.taker_id
        assert tid is not None  # connected
        # Asterisk still holds the dead channel (nothing sent a BYE): release
        # it; its later ChannelDestroyed finds nothing connected and is ignored.
        why: _Detail = {"reason": HANDSET_LOST, "evidence": ev.evidence}
        cmds: list[Command] = [ReleaseHandset(aid), *self._dropped(c, why, HANDSET_LOST, now)]
        # Not rung again until its device state says reachable (or the recheck).
        taker = self._takers[tid]
        if not taker.blocked:
            taker.blocked = True
            cmds.append(self._start_timer(_Timer.DEVICE, tid, now + DEVICE_RECHECK_S))
        return cmds

    def _dropped(self, c: Caller, why: _Detail, reason: str, now: float) -> list[Command]:
        """The taker's side of a connected call is gone without ending it: the
        caller goes back to the queue (TAKER_LEFT carries ``why``)."""
        tid = c.taker_id
        assert tid is not None  # connected
        c.attempt_id = c.taker_id = c.answered_at = None
        left: _Detail = {"taker_id": tid, **why, "side": "taker"}
        cmds: list[Command] = [self._call_event(c, CallStage.TAKER_LEFT, now, left)]
        cmds += self._requeue(c, reason, now)
        # Offer the caller to someone else first; the same taker only when
        # nobody else is free (``tried`` is a preference, never a block).
        c.tried.add(tid)
        return cmds + self._taker_left_call(tid, c, now)

    # ---- overflow -------------------------------------------------------------------

    def _overflow_unstaffed(self, now: float) -> list[Command]:
        watched = [q.name for q in self._queues.values() if q.overflow.when_no_takers]
        if not watched:
            return []  # runs after every event: nothing to do in the usual set-up
        if all(self._is_staffed(name) for name in watched):
            return []  # the usual case, found after a taker or two per queue
        staffed = {qn for t in self._takers.values() if _on_duty(t) for qn in t.config.queues}
        cmds: list[Command] = []
        for c in list(self._callers.values()):
            for _ in range(len(self._queues) + 1):  # at most one move per queue
                q = self._queue_of(c)
                if (
                    c.call_id not in self._callers
                    or c.state is not CallerState.WAITING
                    or q.name in staffed
                    or not q.overflow.when_no_takers
                    or not self._may_overflow(c, q, staffed)
                ):
                    break
                cmds += self._overflow(c, "no-takers", now, by_time=False, staffed=staffed)
        return cmds

    def _is_staffed(self, queue: str) -> bool:
        return any(_on_duty(t) and queue in t.config.queues for t in self._takers.values())

    def _may_overflow(self, c: Caller, q: QueueConfig, staffed: set[str] | None) -> bool:
        """Loop guard: time moves only to new places; "no takers" also back to
        a visited queue that now has takers (``staffed`` is None for time)."""
        ov = q.overflow
        if ov.dial:
            return f"dial:{ov.dial}" not in c.visited
        if not ov.queue:
            return False  # no target: the caller keeps waiting
        return ov.queue not in c.visited or (staffed is not None and ov.queue in staffed)

    def _overflow(
        self,
        c: Caller,
        reason: str,
        now: float,
        *,
        by_time: bool,
        staffed: set[str] | None = None,
    ) -> list[Command]:
        q = self._queue_of(c)
        if not self._may_overflow(c, q, None if by_time else staffed):
            return []
        if q.overflow.dial:
            return self._redirect(c, q.overflow.dial, reason, now)
        return self._move(c, self._queues[q.overflow.queue], CallStage.OVERFLOWED, reason, now)

    def _move(
        self, c: Caller, target: QueueConfig, stage: CallStage, reason: str, now: float
    ) -> list[Command]:
        old = c.queue
        c.queue, c.queued_at = target.name, now
        c.visited.add(target.name)
        c.tried.clear()
        detail: _Detail = {"from_queue": old, "to_queue": target.name, "reason": reason}
        cmds: list[Command] = [self._call_event(c, stage, now, detail)]
        if c.hold is not None and c.hold != (target.hold, target.music_class):
            cmds += [StopHold(c.call_id, c.hold[0]), *self._start_hold(c)]
        return cmds + self._queue_timers(c, target, now)

    def _redirect(self, c: Caller, dial: str, reason: str, now: float) -> list[Command]:
        c.overflow_due = False
        cmds: list[Command] = []
        for aid in list(c.offers):
            cmds += self._end_offer(aid, _I.RING_CANCELLED, now, cancel_ring=True)
        cmds += self._cancel_caller_timers(c)
        c.visited.add(f"dial:{dial}")
        c.playing, c.hold = None, None  # leaving our app stops both
        del self._callers[c.call_id]
        self._redirected[c.call_id] = c
        while len(self._redirected) > _REDIRECT_MEMORY:
            del self._redirected[next(iter(self._redirected))]
        detail: _Detail = {"from_queue": c.queue, "dial": dial, "reason": reason}
        return [
            *cmds,
            self._call_event(c, CallStage.OVERFLOWED, now, detail),
            RedirectCaller(c.call_id, dial),
        ]

    # ---- takers ---------------------------------------------------------------------

    def _request(
        self, taker_id: str, inp: TakerInput, now: float, reason: str = ""
    ) -> list[Command]:
        """A taker's or admin's request; refused before any change if illegal."""
        taker = self._check_request(taker_id, inp)
        status = taker.status
        if status is TakerStatus.ON_CALL:
            # Nothing interrupts a 112 call: remember, or forget, for its end.
            pending = taker.after_call[0] if taker.after_call else None
            if inp in (_I.LOG_OUT, _I.PAUSE):
                taker.after_call = (inp, reason)
            elif (inp, pending) in ((_I.LOG_IN, _I.LOG_OUT), (_I.UNPAUSE, _I.PAUSE)):
                taker.after_call = None
            return []
        before = (status, taker.reason)
        cmds: list[Command] = []
        leaving = inp in (_I.LOG_OUT, _I.PAUSE)
        if leaving and status is TakerStatus.RINGING and taker.attempt_id is not None:
            cmds += self._end_offer(
                taker.attempt_id, _I.RING_CANCELLED, now, cancel_ring=True, publish_taker=False
            )
        if leaving and status is TakerStatus.WRAP_UP:
            cmds += self._cancel_timer(_Timer.WRAPUP, taker_id)
        taker.apply(inp, now, reason)
        if taker.status is TakerStatus.AVAILABLE and status in (
            TakerStatus.OFFLINE,
            TakerStatus.PAUSED,
        ):
            taker.misses = 0  # a fresh start
            if status is TakerStatus.OFFLINE:
                taker.blocked = False
        return cmds + self._publish_taker(taker, before, now)

    def _check_request(self, taker_id: str, inp: TakerInput) -> Taker:
        taker = self._takers.get(taker_id)
        if taker is None or taker.removed:
            raise RemoteProtocolError(f"taker {taker_id!r} is not configured")
        if (taker.status, inp) not in TAKER_TRANSITIONS:
            raise RemoteProtocolError(
                f"taker {taker_id!r}: {inp.value!r} is not allowed while {taker.status.value!r}"
            )
        return taker

    def _taker_left_call(self, tid: str, c: Caller, now: float) -> list[Command]:
        """The taker's side of a call's end: wrap-up, or what they asked for."""
        taker = self._takers[tid]
        before = (taker.status, taker.reason)
        taker.apply(_I.CALL_ENDED, now)
        taker.attempt_id = taker.call_id = None
        taker.last_call_end = now
        cmds: list[Command] = []
        wrapup_s = self._queue_of(c).wrapup_s
        if taker.after_call is not None:
            (inp, reason), taker.after_call = taker.after_call, None
            taker.apply(inp, now, reason)
        elif wrapup_s == 0:
            taker.apply(_I.WRAP_UP_DONE, now)
        else:
            cmds.append(self._start_timer(_Timer.WRAPUP, tid, now + wrapup_s))
        return self._publish_taker(taker, before, now) + cmds + self._forget_if_removed(taker)

    def _device_changed(self, ev: TakerDeviceChanged) -> list[Command]:
        # Remembered even for a taker not (yet) configured: device state only
        # reports changes, so a taker added later must start from the truth.
        self._devices[ev.taker_id] = (ev.reachable, ev.in_use)
        taker = self._takers.get(ev.taker_id)
        if taker is None:
            return []
        taker.reachable, taker.in_use = ev.reachable, ev.in_use
        if ev.reachable and not ev.in_use and taker.blocked:
            taker.blocked = False
            return self._cancel_timer(_Timer.DEVICE, ev.taker_id)
        return []

    def _publish_taker(
        self, taker: Taker, before: tuple[TakerStatus, str], now: float
    ) -> list[Command]:
        if (taker.status, taker.reason) == before:
            return []
        return [PublishTakerState(taker.taker_id, taker.status, now, taker.reason)]

    def _forget_if_removed(self, taker: Taker) -> list[Command]:
        if not (taker.removed and taker.status is TakerStatus.OFFLINE):
            return []
        del self._takers[taker.taker_id]
        return self._cancel_timer(_Timer.DEVICE, taker.taker_id) + self._cancel_timer(
            _Timer.WRAPUP, taker.taker_id
        )

    # ---- timers -------------------------------------------------------------------

    def _start_timer(self, kind: _Timer, key: str, at: float) -> StartTimer:
        tid = _timer_id(kind, key)
        self._timers[tid] = (kind, key)
        return StartTimer(tid, at)

    def _cancel_timer(self, kind: _Timer, key: str) -> list[Command]:
        tid = _timer_id(kind, key)
        return [CancelTimer(tid)] if self._timers.pop(tid, None) is not None else []

    def _cancel_caller_timers(self, c: Caller) -> list[Command]:
        cmds: list[Command] = []
        for kind in (_Timer.RETRY, _Timer.REASSURE, _Timer.OVERFLOW):
            cmds += self._cancel_timer(kind, c.call_id)
        return cmds

    def _queue_timers(self, c: Caller, q: QueueConfig, now: float) -> list[Command]:
        """(Re)arm the overflow and reassurance timers for the caller's queue."""
        cmds: list[Command] = []
        after_s = q.overflow.after_s
        if after_s is not None and q.overflow.has_target:
            cmds.append(self._start_timer(_Timer.OVERFLOW, c.call_id, c.queued_at + after_s))
        else:
            cmds += self._cancel_timer(_Timer.OVERFLOW, c.call_id)
        if q.reassurance_every_s is not None:
            at = now + q.reassurance_every_s
            cmds.append(self._start_timer(_Timer.REASSURE, c.call_id, at))
        else:
            cmds += self._cancel_timer(_Timer.REASSURE, c.call_id)
        return cmds

    def _timer_fired(self, kind: _Timer, key: str, now: float) -> list[Command]:
        if kind is _Timer.RING:
            if key not in self._offers:  # pragma: no cover - cancelled with the offer
                return []
            return self._end_offer(key, _I.RING_MISSED, now, cancel_ring=True, failure="no_answer")
        if kind is _Timer.RETRY:
            # The delay is over when its timer fires, even if the clock the
            # shell read is a hair short of it: an event loop's timer may run
            # up to a millisecond early, and the caller must not then wait on
            # for an unrelated event. Settle offers the caller again.
            c = self._callers.get(key)
            if c is not None:
                c.not_before = min(c.not_before, now)
            return []
        if kind in (_Timer.WRAPUP, _Timer.DEVICE):
            taker = self._takers.get(key)
            if taker is None:  # pragma: no cover - cancelled when forgotten
                return []
            if kind is _Timer.DEVICE:
                taker.blocked = False
                return []
            before = (taker.status, taker.reason)
            taker.apply(_I.WRAP_UP_DONE, now)
            return self._publish_taker(taker, before, now)
        c = self._callers.get(key)
        if c is None or c.attempt_id is not None:  # pragma: no cover - cancelled with the call
            return []
        if kind is _Timer.REASSURE:
            return self._reassure(c, now)
        if c.offers:  # overflow time while ringing: only if this ring fails
            c.overflow_due = True
            return []
        return self._overflow(c, "wait", now, by_time=True)

    # ---- configuration and failures -------------------------------------------------

    def _config_changed(self, config: CentreConfig, now: float) -> list[Command]:
        """Apply live. Calls go on; removed takers leave after their call."""
        self._config = config
        self._queues = {q.name: q for q in config.queues}
        old = self._takers
        self._takers = {}
        cmds: list[Command] = []
        for tc in config.takers:
            taker = old.pop(tc.taker_id, None)
            if taker is None:
                taker = self._new_taker(tc, now)
                if taker.status is TakerStatus.AVAILABLE:
                    cmds.append(PublishTakerState(tc.taker_id, TakerStatus.AVAILABLE, now))
            elif taker.removed:  # back in the config before their call ended
                taker.removed, taker.after_call = False, None
            taker.config = tc
            self._takers[tc.taker_id] = taker
        for taker in old.values():  # no longer configured
            self._takers[taker.taker_id] = taker
            taker.removed = True
            if taker.status is TakerStatus.ON_CALL:
                taker.after_call = (_I.LOG_OUT, "")
                continue
            before = (taker.status, taker.reason)
            if taker.status is TakerStatus.RINGING and taker.attempt_id is not None:
                cmds += self._end_offer(
                    taker.attempt_id, _I.RING_CANCELLED, now, cancel_ring=True, publish_taker=False
                )
            cmds += self._cancel_timer(_Timer.WRAPUP, taker.taker_id)
            taker.apply(_I.LOG_OUT, now)
            cmds += self._publish_taker(taker, before, now) + self._forget_if_removed(taker)
        default = self._default_queue()
        for c in list(self._callers.values()):  # callers of a removed queue
            if c.queue in self._queues:
                continue
            if c.attempt_id is not None:
                c.queue = default.name  # for its wrap-up and any requeue
            else:
                cmds += self._move(c, default, CallStage.OVERFLOWED, "queue-removed", now)
        return cmds

    def _command_failed(self, cmd: Command, now: float) -> list[Command]:
        match cmd:
            case RingHandset(attempt_id=aid) if aid in self._offers:
                return self._end_offer(
                    aid, _I.RING_FAILED, now, cancel_ring=False, failure="originate-failed"
                )
            case ConnectCall(attempt_id=aid, call_id=call_id) if (
                self._connected.get(aid) == call_id
            ):
                return self._connect_failed(self._callers[call_id], now)
            case PlayPrompt(call_id=call_id, playback_id=pid):
                return self._prompt_finished(call_id, pid, now, played=False)
            case RedirectCaller(call_id=call_id) if call_id in self._redirected:
                c = self._redirected.pop(call_id)
                self._callers[call_id] = c
                return self._requeue(c, "redirect-failed", now)
            case StartTimer(timer_id=timer_id) if timer_id in self._timers:
                kind, key = self._timers[timer_id]
                if kind in (_Timer.WRAPUP, _Timer.RETRY, _Timer.DEVICE):
                    del self._timers[timer_id]
                    return self._timer_fired(kind, key, now)
                return []
            case _:
                return []  # nothing to recover, or about something already over

    def _connect_failed(self, c: Caller, now: float) -> list[Command]:
        aid, tid = c.attempt_id, c.taker_id
        assert aid is not None  # connected
        assert tid is not None
        del self._connected[aid]
        c.attempt_id = c.taker_id = c.answered_at = None
        taker = self._takers[tid]
        before = (taker.status, taker.reason)
        taker.apply(_I.CONNECT_FAILED, now)
        taker.attempt_id = taker.call_id = None
        taker.calls_taken -= 1  # the call was never taken
        if taker.after_call is not None:
            (inp, reason), taker.after_call = taker.after_call, None
            taker.apply(inp, now, reason)
        cmds: list[Command] = [ReleaseHandset(aid), *self._requeue(c, "connect-failed", now)]
        return cmds + self._publish_taker(taker, before, now) + self._forget_if_removed(taker)

    # ---- small helpers ----------------------------------------------------------------

    def _new_taker(self, tc: TakerConfig, now: float | None) -> Taker:
        status = TakerStatus.AVAILABLE if tc.logged_in else TakerStatus.OFFLINE
        reachable, in_use = self._devices.get(tc.taker_id, (True, False))
        return Taker(tc, status=status, since=now, reachable=reachable, in_use=in_use)

    def _default_queue(self) -> QueueConfig:
        return self._queues[self._config.default_queue]

    def _queue_of(self, c: Caller) -> QueueConfig:
        return self._queues.get(c.queue) or self._default_queue()

    def _waiting_in(self, queue: str) -> list[Caller]:
        """Callers of ``queue`` not yet connected, in service order."""
        waiting = [c for c in self._callers.values() if c.queue == queue and c.attempt_id is None]
        return sorted(waiting, key=lambda c: c.order_key)

    @staticmethod
    def _call_event(c: Caller, stage: CallStage, now: float, detail: _Detail) -> PublishCallEvent:
        return PublishCallEvent(c.call_id, stage, now, detail)


def _abandon_order(e: CallbackEntry) -> tuple[float, str]:
    return (e.abandoned_at, e.call_id)
