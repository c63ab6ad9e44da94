"""The consumer: one task feeds events to the core in order and runs its commands.

Everything that happens to calls arrives on one inbox (ARI events from the
websocket reader, timer expiries, API requests, failed commands coming back),
and one task takes them out one at a time. The core is therefore never
re-entered and needs no locks; the order of events is the order Asterisk sent
them in.

A command that fails does not stop the loop: it comes back to the core as
``CommandFailed`` through the same inbox, so the core decides what the caller
needs next (ring the next taker, put the caller back at the head of the queue).
Nothing raised while handling one item may kill the loop: a 112 service that
stops consuming events strands every caller in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import structlog
from pydantic import BaseModel

from . import ari, conference, core, ids
from .adapters.ari import (
    ARI_COMMANDS,
    FeatureRequest,
    HandBack,
    TakerDirectory,
    caller_identity_of,
    feature_event,
    translate,
)
from .lanes import Lanes

log = structlog.get_logger(__name__)

Published = core.PublishCallEvent | core.PublishTakerState | core.AddCallback


class CommandRunner(Protocol):
    """Carries out the core's telephony commands (``adapters.ari.AriCommandRunner``)."""

    async def run(self, cmd: core.Command) -> None: ...

    async def hand_back(self, call_id: str) -> None: ...

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None: ...


class Observer(Protocol):
    """Something that follows the core's published state (incidents, metrics).
    Must not block: it is called on the consumer's path."""

    def call_arrived(self, event: core.CallerArrived, at: float, incident_id: str) -> None: ...

    def published(self, item: Published, incident_id: str | None) -> None: ...

    def recording_done(self, call_id: str, name: str, incident_id: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Resync:
    """The event websocket (re)connected: rebuild state from Asterisk."""


@dataclass(frozen=True, slots=True)
class CommandDone:
    """A telephony command finished in its lane (the conference desk follows
    connects and ends of calls)."""

    command: core.Command


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """A core event that came from the HTTP API (login, pause, config ...)."""

    event: core.Event


@dataclass(frozen=True, slots=True)
class ConferenceRequest:
    """An event for the conference core (API request, failed conference command)."""

    event: conference.Event


@dataclass(frozen=True, slots=True)
class RecordingDue:
    """The caller left our app a while ago: journal the call's recording."""

    call_id: str


Item = ari.Event | core.Event | Resync | ApiRequest | ConferenceRequest | CommandDone | RecordingDue


class ConferenceHook(Protocol):
    """The conference desk (``adapters.conference``), run inside this consumer."""

    async def intercept(self, item: Item, service: CallService) -> bool: ...

    async def after_command(self, cmd: core.Command, service: CallService) -> None: ...


_V = TypeVar("_V")
_INCIDENT_MEMORY = 10_000  # calls whose incident id we remember after they end
# After the caller left Stasis: the dialplan's MixMonitor (``siaga-call-<id>``)
# closes its file when the channel hangs up, or at once when the caller goes
# on in the dialplan ([siaga-record] stops it). A few ms in practice.
_RECORDING_GRACE_S = 3.0


class CallService:
    def __init__(
        self,
        *,
        distributor: core.Distributor,
        runner: CommandRunner,
        takers: TakerDirectory,
        default_queue: str,
        observers: Iterable[Observer] = (),
        resync: Callable[[CallService], Awaitable[None]] | None = None,
        conference: ConferenceHook | None = None,
        on_command_failed: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.distributor = distributor
        self.inbox: asyncio.Queue[Item] = asyncio.Queue()
        self._runner = runner
        self._takers = takers
        self._default_queue = default_queue
        self._observers = list(observers)
        self._clock = clock
        self._resync = resync
        self.conference = conference
        self._on_command_failed = on_command_failed
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._incidents: OrderedDict[str, str] = OrderedDict()
        self._recorded: OrderedDict[str, None] = OrderedDict()  # recordings journalled
        self._recordings_due: dict[str, asyncio.TimerHandle] = {}  # in their grace period
        self._lanes: Lanes[core.Command] = Lanes(self._run_in_lane)
        self.handled = 0

    # ---- public --------------------------------------------------------

    def submit(self, item: Item) -> None:
        self.inbox.put_nowait(item)

    def incident_of(self, call_id: str) -> str | None:
        return self._incidents.get(call_id)

    def remember_call(self, call_id: str) -> str:
        """Bind ``call_id`` to its incident id (deterministic: survives restarts)."""
        incident = incident_id_for(call_id)
        self._remember(call_id, incident)
        return incident

    def journal_recovered(
        self, call_id: str, caller: core.CallerIdentity, arrived_at: float
    ) -> str:
        """A restarted service adopted this call: make sure its incident exists.
        An earlier run may have died before journalling the arrival; the
        incident store opens it at most once (``OpenIncident.recovered``)."""
        incident = self.remember_call(call_id)
        event = core.CallerArrived(call_id, caller, self._default_queue, recovered=True)
        self._notify("call_arrived", event, arrived_at, incident)
        return incident

    def taker_for(self, endpoint: str) -> str | None:
        return self._takers.taker_for(endpoint)

    def taker_endpoints(self) -> list[str]:
        return sorted({e for e in self._takers.by_endpoint if "/" in e})

    async def run_commands(self, commands: Iterable[core.Command]) -> None:
        for cmd in commands:
            await self._execute(cmd)

    async def hand_back_waiting_callers(self) -> int:
        """Graceful stop: every caller not yet connected goes to the dialplan
        fallback (which rings the takers directly); connected calls stay
        bridged in Asterisk. Returns how many callers were handed back."""
        count = 0
        for call_id in self.distributor.waiting_calls():
            with structlog.contextvars.bound_contextvars(
                call_id=call_id, incident_id=self._incidents.get(call_id)
            ):
                try:
                    await self._runner.hand_back(call_id)
                    count += 1
                    log.info("shutdown.caller_handed_back")
                    self._handed_back(call_id, "service stopping")
                except Exception as exc:  # noqa: BLE001 - try every caller
                    log.error(  # noqa: TRY400 - expected when the caller just hung up
                        "shutdown.hand_back_failed", error=str(exc)[:300]
                    )
        for attempt_id in self.distributor.live_offers():
            await self._runner.run(core.CancelRing(attempt_id))
        return count

    async def run(self) -> None:
        while True:
            item = await self.inbox.get()
            try:
                await self._process(item)
            except asyncio.CancelledError:
                raise
            except Exception:  # the loop must outlive any one event
                log.exception("service.item_failed", item=type(item).__name__)
                await self._rescue(item)
            finally:
                self.handled += 1
                self.inbox.task_done()

    async def _rescue(self, item: Item) -> None:
        """A caller whose arrival we failed to handle must not sit in our app
        unanswered: hand them straight to the dialplan fallback, which rings
        the call takers without us."""
        if not (isinstance(item, ari.StasisStart) and item.args[:1] in ((), ("caller",))):
            return
        call_id = item.channel.id
        if call_id in self.distributor.known_calls():
            return  # the core has them; its own recovery paths apply
        if call_id not in self._incidents and ids.is_safe_id(call_id):
            # The incident is opened here, so the fallback's recording (named
            # siaga-handback-*) finds it when it is journalled.
            with contextlib.suppress(ValueError):
                arrived = core.CallerArrived(
                    call_id, caller_identity_of(item.channel), self._default_queue
                )
                self._notify("call_arrived", arrived, self._clock(), self.remember_call(call_id))
        await self._hand_back(call_id, "failed to handle the arrival")
        if call_id in self._incidents:
            self._handed_back(call_id, "failed to handle the arrival")

    def _handed_back(self, call_id: str, reason: str) -> None:
        """Close a handed-back caller's journal: the dialplan fallback has the call now."""
        ended = core.PublishCallEvent(
            call_id,
            core.CallStage.OVERFLOWED,
            self._clock(),
            {"side": "fallback", "to": "dialplan-fallback", "reason": reason},
        )
        self._notify("published", ended, self._incidents.get(call_id))

    async def _hand_back(self, call_id: str, reason: str) -> None:
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            try:
                await self._runner.hand_back(call_id)
                log.error("service.caller_rescued_to_fallback", reason=reason)
            except Exception as exc:  # noqa: BLE001 - nothing more we can do here
                log.critical("service.caller_rescue_failed", error=str(exc)[:300])

    async def close(self) -> None:
        """Stop timers and lanes (the end of the service)."""
        self.cancel_timers()
        await self._lanes.close()

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # ---- one item ------------------------------------------------------

    async def _process(self, item: Item) -> None:
        if isinstance(item, (ari.StasisEnd, ari.ChannelDestroyed)):
            self._caller_left(item.channel.id)  # before the conference desk may take it
        if self.conference is not None and await self.conference.intercept(item, self):
            return
        if isinstance(item, Resync):
            if self._resync is not None:
                await self._resync(self)
            return
        if isinstance(item, CommandDone):
            if self.conference is not None:
                await self.conference.after_command(item.command, self)
            return
        if isinstance(item, ApiRequest):
            await self.feed(item.event)
            return
        if isinstance(item, RecordingDue):
            self._recording_due(item.call_id)
            return
        if isinstance(item, BaseModel):  # every ARI event is a pydantic model
            for ev in translate(item, self._takers, self._default_queue):
                if isinstance(ev, FeatureRequest):
                    await self._feature(ev)
                elif isinstance(ev, HandBack):
                    await self._hand_back(ev.channel_id, ev.reason)
                else:
                    await self.feed(ev)
            return
        if isinstance(item, ConferenceRequest):
            log.error("service.conference_disabled", conference_event=type(item.event).__name__)
            return
        await self.feed(item)  # a core event (timer, failed command)

    async def feed(self, event: core.Event) -> None:
        """Hand one event to the core and carry out what it asks."""
        call_id = _call_of(event)
        now = self._clock()
        if isinstance(event, core.CallerHungUp):  # also the losses a resync feeds
            self._caller_left(event.call_id)
        arrival = None  # a new caller, journalled below
        if isinstance(event, core.CallerArrived) and event.call_id not in self._incidents:
            arrival = event
            incident_id: str | None = incident_id_for(event.call_id)
        else:
            incident_id = self._incidents.get(call_id) if call_id else None
        with structlog.contextvars.bound_contextvars(call_id=call_id, incident_id=incident_id):
            commands = self.distributor.handle(event, now)
            log.debug(
                "core.handled",
                core_event=type(event).__name__,
                commands=[type(c).__name__ for c in commands],
            )
            rings, others = _split_rings(commands)
            for cmd in rings:
                await self._execute(cmd)
            if rings:
                # Let the ring lanes run now: their requests reach Asterisk
                # before the journal, the metrics and the call's own commands
                # are dealt with. The core has already settled this event.
                await asyncio.sleep(0)
            if arrival is not None and incident_id is not None:
                # Journalled before any of the call's published stages. Only
                # now remembered: if the core had raised, the rescue path
                # would open the incident itself (it opens only unknown ones).
                self._remember(arrival.call_id, incident_id)
                self._notify("call_arrived", arrival, now, incident_id)
            for cmd in others:
                await self._execute(cmd)

    async def _execute(self, cmd: core.Command) -> None:
        if isinstance(cmd, core.StartTimer):
            self._start_timer(cmd)
        elif isinstance(cmd, core.CancelTimer):
            handle = self._timers.pop(cmd.timer_id, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(cmd, (core.PublishCallEvent, core.PublishTakerState, core.AddCallback)):
            call_id = (
                cmd.entry.call_id
                if isinstance(cmd, core.AddCallback)
                else getattr(cmd, "call_id", None)
            )
            incident_id = self._incidents.get(call_id) if call_id else None
            self._notify("published", cmd, incident_id)
        elif isinstance(cmd, ARI_COMMANDS):
            self._lanes.submit(_lane_of(cmd), cmd)
        else:
            log.error("service.command_unhandled", command=type(cmd).__name__)

    async def _run_in_lane(self, cmd: core.Command) -> None:
        """Runs in the call's lane, off the consumer: report, never touch the core."""
        try:
            await self._runner.run(cmd)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the core
            log.warning("service.command_failed", command=type(cmd).__name__, error=str(exc)[:300])
            if self._on_command_failed is not None:
                self._on_command_failed(type(cmd).__name__)
            self.submit(core.CommandFailed(command=cmd, reason=str(exc)[:300]))
        else:
            if self.conference is not None and isinstance(cmd, _CONFERENCE_FOLLOWS):
                self.submit(CommandDone(cmd))

    async def idle(self) -> None:
        """Wait until the inbox is empty and every lane has drained."""
        while True:
            await self.inbox.join()
            await self._lanes.idle()
            if self.inbox.empty() and not self._lanes:
                return

    def _start_timer(self, cmd: core.StartTimer) -> None:
        old = self._timers.pop(cmd.timer_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, cmd.at - self._clock())

        def fire(timer_id: str = cmd.timer_id) -> None:
            self._timers.pop(timer_id, None)
            self.submit(core.TimerFired(timer_id))

        self._timers[cmd.timer_id] = loop.call_later(delay, fire)

    async def _feature(self, req: FeatureRequest) -> None:
        event = feature_event(req)
        with structlog.contextvars.bound_contextvars(taker_id=req.taker_id, feature=req.action):
            ok = event is not None
            if event is not None:
                try:
                    await self.feed(event)
                except ValueError as exc:
                    log.warning("feature.refused", error=str(exc))
                    ok = False
            log.info("feature.requested", ok=ok)
        await self._runner.finish_feature(req.channel_id, ok=ok)

    def _notify(self, method: str, *args: object) -> None:
        for obs in self._observers:
            try:
                getattr(obs, method)(*args)
            except Exception:
                log.exception("service.observer_failed", observer=type(obs).__name__)

    def _caller_left(self, call_id: str) -> None:
        """The caller of a call we opened has left our app (hung up, or went
        on in the dialplan): their recording is finished, or about to be.
        Journal it after a grace period, once per call."""
        if call_id not in self._incidents or call_id in self._recorded:
            return
        _remember_bounded(self._recorded, call_id, None)
        loop = asyncio.get_running_loop()
        due = loop.call_later(_RECORDING_GRACE_S, self.submit, RecordingDue(call_id))
        self._recordings_due[call_id] = due

    def journal_pending_recordings(self) -> int:
        """Stopping: journal now every recording still in its grace period
        (its caller has left, so the file is closed or about to be); a timer
        would never fire. Returns how many."""
        pending = list(self._recordings_due)
        for call_id in pending:
            self._recordings_due.pop(call_id).cancel()
            self._recording_due(call_id)
        return len(pending)

    def _recording_due(self, call_id: str) -> None:
        self._recordings_due.pop(call_id, None)
        if not ids.is_safe_id(call_id):
            return
        self._journal_recording(call_id, ids.recording_name(call_id))

    def _journal_recording(self, call_id: str, name: str) -> None:
        """Hand the finished recording to the observers (the journal describes
        it off the loop, and journals a missing file as failed)."""
        incident_id = self._incidents.get(call_id)
        with structlog.contextvars.bound_contextvars(call_id=call_id, incident_id=incident_id):
            log.info("recording.finished", name=name)
            for obs in self._observers:
                try:
                    obs.recording_done(call_id, name, incident_id)
                except Exception:
                    log.exception("service.observer_failed", observer=type(obs).__name__)

    def _remember(self, call_id: str, incident_id: str) -> None:
        _remember_bounded(self._incidents, call_id, incident_id)


_INCIDENT_NAMESPACE = uuid.UUID("5e1a6a11-2c0d-4b1e-9a12-000000000112")


def incident_id_for(call_id: str) -> str:
    """The incident id of a call, derived from its Asterisk uniqueid, so that a
    restarted service finds the same incident for a call it adopts."""
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, call_id))


def _remember_bounded(memory: OrderedDict[str, _V], call_id: str, value: _V) -> None:
    """Remember ``call_id`` (newest last), forgetting the oldest past _INCIDENT_MEMORY."""
    memory[call_id] = value
    memory.move_to_end(call_id)
    while len(memory) > _INCIDENT_MEMORY:
        memory.popitem(last=False)


_CONFERENCE_FOLLOWS = (core.ConnectCall, core.EndCall, core.RedirectCaller)


def _split_rings(
    commands: list[core.Command],
) -> tuple[list[core.Command], list[core.Command]]:
    """A batch's handset rings, and the rest in the core's order.

    Lanes start in the order commands are submitted, so rings submitted first
    reach Asterisk before the caller's bridge and greeting requests instead of
    after them: the first taker's handset rings sooner. A ring is the first
    command of its own offer lane, so no lane's order changes."""
    rings: list[core.Command] = [c for c in commands if isinstance(c, core.RingHandset)]
    if not rings:
        return [], commands
    return rings, [c for c in commands if not isinstance(c, core.RingHandset)]


def _lane_of(cmd: core.Command) -> str:
    """The lane a telephony command runs in: its call's, or its offer's.

    A handset offer's ring, cancel and release run in order in the offer's own
    lane, so that ringing starts at once instead of after the caller's answer,
    bridge and greeting requests: the handset rings sooner, and a cancel still
    never overtakes its ring. Connecting the answered handset needs the bridge,
    so ``ConnectCall`` stays in the call's lane (it only ever follows the
    ring's answer; if a release overtakes it, the connect fails and the core
    handles that as it does any failed connect)."""
    if isinstance(cmd, (core.RingHandset, core.CancelRing, core.ReleaseHandset)):
        return f"offer:{cmd.attempt_id}"
    call_id = getattr(cmd, "call_id", None)
    if isinstance(call_id, str):
        return call_id
    attempt = getattr(cmd, "attempt_id", None)
    if isinstance(attempt, str):
        parsed = ids.parse_offer_id(attempt)
        return parsed[0] if parsed else attempt
    return "-"


def _call_of(event: core.Event) -> str | None:
    call_id = getattr(event, "call_id", None)
    if isinstance(call_id, str):
        return call_id
    attempt = getattr(event, "attempt_id", None)
    if isinstance(attempt, str):
        parsed = ids.parse_offer_id(attempt)
        return parsed[0] if parsed else None
    return None
