"""The consumer: one task feeds events to both cores in order and runs their commands.

Everything that happens to calls arrives on one inbox: ARI events from the
websocket reader, timer expiries, API requests (core or conference events),
and what the per-call lanes report back (a failed command, a finished one,
a caller looked up). One task takes them out one at a time, so neither core
is ever re-entered and nothing needs a lock; the order of events is the
order Asterisk sent them in.

- Each ARI event is translated once (``_translate.translate``); the result
  feeds the conference core first, then the distribution core.
- The consumer never waits for Asterisk: every telephony command, of either
  core, goes to its call's lane (``Lanes``) and runs there. What a lane learns
  comes back through the inbox. (The one exception is the resynchronisation
  after a (re)connect, which must finish before later events apply.)
- The cores meet only through ``_coordinator`` (connected, ended, handover)
  and the return of a handed-over caller.
- A command that fails comes back to its core as ``CommandFailed`` /
  ``PartyCommandFailed``, so the core decides what the caller needs next.
- Nothing raised while handling one item may kill the loop: a 112 service
  that stops consuming events strands every caller in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar, get_args

import structlog
from pydantic import BaseModel

from .. import ari, conference, core, ids
from . import _coordinator
from ._lanes import Lanes
from ._translate import (
    FeatureRequest,
    HandBack,
    TakerDirectory,
    caller_identity_of,
    feature_event,
    translate,
)

log = structlog.get_logger(__name__)

Published = core.PublishCallEvent | core.PublishTakerState | core.AddCallback | core.ResolveCallback
_PUBLISHED = (core.PublishCallEvent, core.PublishTakerState, core.AddCallback, core.ResolveCallback)

# Every command is declared once, in its core's ``Command`` union; what the
# shell does with it is derived from there. Shell commands run here; the
# conference's two glue commands run here too; everything else is telephony
# and runs in a lane (``Telephony.run``: a {type: handler} table).
_SHELL_CORE = (
    core.StartTimer,
    core.CancelTimer,
    core.PublishCallEvent,
    core.PublishTakerState,
    core.AddCallback,
    core.ResolveCallback,
)
_GLUE = (conference.HandOverCall, conference.ReturnCall)
TelephonyCommand = core.Command | conference.ConferenceCommand
TELEPHONY_COMMANDS: tuple[type, ...] = tuple(
    t for t in get_args(core.Command) if t not in _SHELL_CORE
) + tuple(t for t in get_args(conference.ConferenceCommand) if t not in _GLUE)
_CONFERENCE_EVENTS: tuple[type, ...] = get_args(conference.Event)
_CORE_EVENTS: tuple[type, ...] = get_args(core.Event)
# Commands that ring (or stop ringing) a handset run in the handset's own
# lane, so a ring never waits behind the caller's bridge and prompt requests.
_OFFER_LANE = (core.RingHandset, core.CancelRing, core.ReleaseHandset)
_LEG_LANE = (conference.RingParty, conference.CancelParty)

Owner = Literal["core", "conference"]


class Telephony(Protocol):
    """Carries out telephony commands in Asterisk (``adapters.telephony``). Raises on failure."""

    async def run(self, cmd: TelephonyCommand) -> None: ...

    async def hand_back(self, call_id: str) -> None: ...

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None: ...

    async def find_channel(self, channel_id: str) -> ari.Channel | None: ...


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
    """A telephony command finished in its lane (the conference core follows
    connects and ends of calls)."""

    command: core.Command


@dataclass(frozen=True, slots=True)
class TimerDue:
    """A timer one of the cores started has expired."""

    timer_id: str
    owner: Owner


@dataclass(frozen=True, slots=True)
class RecordingDue:
    """The caller left our app a while ago: journal the call's recording."""

    call_id: str


@dataclass(frozen=True, slots=True)
class CallerLookedUp:
    """A handed-over caller's channel, looked up in the call's lane so that
    the caller can go back to the queue (``None`` and ``gone``: hung up)."""

    command: conference.ReturnCall
    channel: ari.Channel | None
    gone: bool


Item = (
    ari.Event
    | core.Event
    | conference.Event
    | Resync
    | CommandDone
    | TimerDue
    | RecordingDue
    | CallerLookedUp
)

_V = TypeVar("_V")
_INCIDENT_MEMORY = 10_000  # calls whose incident id we remember after they end
# After the caller left Stasis: the dialplan's MixMonitor (``siaga-call-<id>``)
# closes its file when the channel hangs up, or at once when the caller goes
# on in the dialplan ([siaga-record] stops it). A few ms in practice.
_RECORDING_GRACE_S = 3.0
# A resynchronisation that failed is tried again after these waits (the last
# repeats): the cores must not stay unreconciled until the next reconnect.
RESYNC_RETRY_S = (0.5, 1.0, 2.0, 5.0)

Resynchroniser = Callable[["CallService"], Awaitable[None]]
# Told of every handset feature code once the core decided: (taker id, or ""
# for a handset nobody works on; action; accepted; the refusal's reason).
# The runtime audits it; it must not block (it runs on the consumer).
FeatureHook = Callable[[str, str, bool, str], None]


class CallService:
    def __init__(
        self,
        *,
        distributor: core.Distributor,
        conferences: conference.Conferences | None = None,
        telephony: Telephony,
        observers: Iterable[Observer] = (),
        resync: Resynchroniser | None = None,
        on_command_failed: Callable[[str], None] | None = None,
        on_core_handled: Callable[[float], None] | None = None,
        on_feature: FeatureHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.distributor = distributor
        self.conferences = conferences or conference.Conferences(conference.AgencyDirectory(()))
        self.inbox: asyncio.Queue[Item] = asyncio.Queue()
        self._telephony = telephony
        self._observers = list(observers)
        self._clock = clock
        self._resync = resync
        self._on_command_failed = on_command_failed
        self._on_core_handled = on_core_handled
        self._on_feature = on_feature
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._incidents: OrderedDict[str, str] = OrderedDict()
        self._recorded: OrderedDict[str, None] = OrderedDict()  # recordings journalled
        self._recordings_due: dict[str, asyncio.TimerHandle] = {}  # in their grace period
        self._lanes: Lanes[TelephonyCommand | conference.ReturnCall] = Lanes(self._run_in_lane)
        self._directory = TakerDirectory.from_config(distributor.config)
        self._directory_of: core.CentreConfig = distributor.config
        self._resync_failures = 0
        self._resync_retry: asyncio.TimerHandle | None = None
        self.handled = 0

    def __repr__(self) -> str:
        return (
            f"<CallService inbox={self.inbox.qsize()} lanes={len(self._lanes)}"
            f" timers={len(self._timers)} {self.distributor!r}>"
        )

    # ---- public --------------------------------------------------------

    def submit(self, item: Item) -> None:
        self.inbox.put_nowait(item)

    def now(self) -> float:
        """The service's clock (the cores take time as an input)."""
        return self._clock()

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
        event = core.CallerArrived(call_id, caller, self.distributor.default_queue, recovered=True)
        self._notify("call_arrived", event, arrived_at, incident)
        return incident

    @property
    def takers(self) -> TakerDirectory:
        """The handset -> taker directory of the configuration in force."""
        config = self.distributor.config
        if config is not self._directory_of:
            self._directory, self._directory_of = TakerDirectory.from_config(config), config
        return self._directory

    def taker_for(self, endpoint: str) -> str | None:
        return self.takers.taker_for(endpoint)

    async def run_commands(self, commands: Iterable[core.Command]) -> None:
        for cmd in commands:
            self._execute(cmd)

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

    async def idle(self) -> None:
        """Wait until the inbox is empty and every lane has drained."""
        while True:
            await self.inbox.join()
            await self._lanes.idle()
            if self.inbox.empty() and not self._lanes:
                return

    async def close(self) -> None:
        """Stop timers and lanes (the end of the service)."""
        self.cancel_timers()
        await self._lanes.close()

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        if self._resync_retry is not None:
            self._resync_retry.cancel()
            self._resync_retry = None

    # ---- stopping --------------------------------------------------------

    async def hand_back_waiting_callers(self) -> int:
        """Graceful stop: every caller not yet connected goes to the dialplan
        fallback (which rings the takers directly); connected calls stay
        bridged in Asterisk. Every step is tried, whatever failed before it.
        Returns how many callers were handed back."""
        count = 0
        for call_id in self.distributor.waiting_calls():
            with structlog.contextvars.bound_contextvars(
                call_id=call_id, incident_id=self._incidents.get(call_id)
            ):
                try:
                    await self._telephony.hand_back(call_id)
                except Exception as exc:  # noqa: BLE001 - try every caller
                    log.error(  # noqa: TRY400 - expected when the caller just hung up
                        "shutdown.hand_back_failed", error=str(exc)[:300]
                    )
                    continue
                count += 1
                log.info("shutdown.caller_handed_back")
                self._handed_back(call_id, "service stopping")
        for attempt_id in self.distributor.live_offers():
            try:
                await self._telephony.run(core.CancelRing(attempt_id))
            except Exception as exc:  # noqa: BLE001 - every ring is stopped, or tried
                log.warning("shutdown.cancel_ring_failed", attempt_id=attempt_id, error=str(exc))
        return count

    def journal_pending_recordings(self) -> int:
        """Stopping: journal now every recording still in its grace period
        (its caller has left, so the file is closed or about to be); a timer
        would never fire. Returns how many."""
        pending = list(self._recordings_due)
        for call_id in pending:
            self._recordings_due.pop(call_id).cancel()
            self._recording_due(call_id)
        return len(pending)

    # ---- one item ------------------------------------------------------

    async def _process(self, item: Item) -> None:
        if isinstance(item, BaseModel):  # every ARI event is a pydantic model
            if isinstance(item, (ari.StasisEnd, ari.ChannelDestroyed)):
                self._caller_left(item.channel.id)
            for ev in translate(item, self.taker_for, self.distributor.default_queue):
                await self._dispatch(ev)
        elif isinstance(item, TimerDue):
            if item.owner == "conference":
                await self.feed_conference(core.TimerFired(item.timer_id))
            else:
                await self.feed(core.TimerFired(item.timer_id))
        elif isinstance(item, CommandDone):
            for ev in _coordinator.conference_events_after(item.command):
                await self.feed_conference(ev)
        elif isinstance(item, CallerLookedUp):
            await self._caller_looked_up(item)
        elif isinstance(item, RecordingDue):
            self._recording_due(item.call_id)
        elif isinstance(item, Resync):
            await self._resynchronise()
        elif isinstance(item, _CONFERENCE_EVENTS):
            await self.feed_conference(item)  # type: ignore[arg-type]  # narrowed by the tuple
        elif isinstance(item, _CORE_EVENTS):
            await self.feed(item)  # type: ignore[arg-type]  # narrowed by the tuple
        else:
            log.error("service.item_unknown", item=type(item).__name__)

    async def _dispatch(
        self, ev: core.Event | conference.Event | FeatureRequest | HandBack
    ) -> None:
        if isinstance(ev, FeatureRequest):
            await self._feature(ev)
        elif isinstance(ev, HandBack):
            await self._hand_back(ev.channel_id, ev.reason)
        elif isinstance(ev, _CONFERENCE_EVENTS):
            await self.feed_conference(ev)  # type: ignore[arg-type]
        else:
            await self.feed(ev)  # type: ignore[arg-type]

    async def feed(self, event: core.Event) -> None:
        """Hand one event to the distribution core and carry out what it asks."""
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
            started = time.perf_counter()
            commands = self.distributor.handle(event, now)
            if self._on_core_handled is not None:
                self._on_core_handled(time.perf_counter() - started)
            log.debug(
                "core.handled",
                core_event=type(event).__name__,
                commands=[type(c).__name__ for c in commands],
            )
            # A batch's rings go to their lanes first: lanes start in the order
            # they are submitted, so the handset's originate reaches Asterisk
            # before the caller's bridge and greeting requests. A ring is the
            # first command of its own offer lane, so no lane's order changes.
            rings = [c for c in commands if isinstance(c, core.RingHandset)]
            for cmd in rings:
                self._execute(cmd)
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
            for other in commands:
                if not isinstance(other, core.RingHandset):
                    self._execute(other)

    async def feed_conference(self, event: conference.Event | core.TimerFired) -> None:
        """Hand one event to the conference core and carry out what it asks."""
        call_id = getattr(event, "call_id", None)
        with structlog.contextvars.bound_contextvars(
            call_id=call_id, incident_id=self.incident_of(call_id) if call_id else None
        ):
            commands = self.conferences.handle(event, self._clock())
            log.debug(
                "conference.handled",
                conference_event=type(event).__name__,
                commands=[type(c).__name__ for c in commands],
            )
            await self._execute_conference(commands)

    async def adopt_conference(
        self,
        call_id: str,
        *,
        taker_channel: str | None,
        taker_id: str,
        parties: list[conference.AdoptedParty],
        offers_made: int,
    ) -> None:
        """Recovery: rebuild one call's conference (``Conferences.adopt``)."""
        commands = self.conferences.adopt(
            call_id,
            taker_channel=taker_channel,
            taker_id=taker_id,
            parties=parties,
            now=self._clock(),
            offers_made=offers_made,
        )
        log.info(
            "recovery.adopted_conference",
            handed_over=taker_channel is None,
            parties=[f"{p.who}:{p.role}" for p in parties],
        )
        await self._execute_conference(commands)

    async def _execute_conference(self, commands: Iterable[conference.Command]) -> None:
        for cmd in commands:
            if isinstance(cmd, core.StartTimer):
                self._start_timer(cmd, "conference")
            elif isinstance(cmd, conference.HandOverCall):
                await self.feed(_coordinator.core_event_for(cmd))
            elif isinstance(cmd, conference.ReturnCall):
                self._lanes.submit(cmd.call_id, cmd)  # looked up, then readmitted
            else:
                self._execute(cmd)

    def _execute(self, cmd: core.Command | conference.ConferenceCommand) -> None:
        if isinstance(cmd, core.StartTimer):
            self._start_timer(cmd, "core")
        elif isinstance(cmd, core.CancelTimer):
            handle = self._timers.pop(cmd.timer_id, None)
            if handle is not None:
                handle.cancel()
        elif isinstance(cmd, _PUBLISHED):
            call_id = (
                cmd.entry.call_id
                if isinstance(cmd, core.AddCallback)
                else getattr(cmd, "call_id", None)
            )
            incident_id = self._incidents.get(call_id) if call_id else None
            self._notify("published", cmd, incident_id)
        elif isinstance(cmd, TELEPHONY_COMMANDS):
            self._lanes.submit(lane_of(cmd), cmd)
        else:
            log.error("service.command_unhandled", command=type(cmd).__name__)

    # ---- in the lanes (off the consumer: report, never touch a core) --------

    async def _run_in_lane(self, cmd: TelephonyCommand | conference.ReturnCall) -> None:
        if isinstance(cmd, conference.ReturnCall):
            await self._look_up_returned_caller(cmd)
            return
        try:
            await self._telephony.run(cmd)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to its core
            reason = str(exc)[:300]
            log.warning("service.command_failed", command=type(cmd).__name__, error=reason)
            if self._on_command_failed is not None:
                self._on_command_failed(type(cmd).__name__)
            if isinstance(cmd, conference.CONFERENCE_COMMANDS):
                self.submit(conference.PartyCommandFailed(cmd, reason))
            else:
                self.submit(core.CommandFailed(command=cmd, reason=reason))
        else:
            if isinstance(cmd, _coordinator.FOLLOWED_BY_CONFERENCE):
                self.submit(CommandDone(cmd))

    async def _look_up_returned_caller(self, cmd: conference.ReturnCall) -> None:
        try:
            chan = await self._telephony.find_channel(cmd.call_id)
        except Exception as exc:  # noqa: BLE001 - queue them anyway, with what we know
            log.warning("conference.return_lookup_failed", error=str(exc)[:300])
            self.submit(CallerLookedUp(cmd, None, gone=False))
            return
        self.submit(CallerLookedUp(cmd, chan, gone=chan is None))

    async def _caller_looked_up(self, item: CallerLookedUp) -> None:
        """Queue a handed-over caller again: nobody talks with them any more."""
        call_id = item.command.call_id
        now = self._clock()
        with structlog.contextvars.bound_contextvars(
            call_id=call_id, incident_id=self.incident_of(call_id)
        ):
            if item.gone:
                # The caller hung up at the same moment: nobody will take this
                # call back, so its end is still the conference's.
                self._execute(conference.EndConference(call_id))
                detail: dict[str, str | int | float | bool] = {
                    "side": "caller",
                    "handed_over": True,
                }
                self._execute(core.PublishCallEvent(call_id, core.CallStage.HUNG_UP, now, detail))
                return
            chan = item.channel
            who = caller_identity_of(chan) if chan is not None else core.CallerIdentity()
            arrived = chan.creationtime.timestamp() if chan and chan.creationtime else now
            log.warning("conference.caller_returned_to_queue", offers_made=item.command.offers_made)
            for cmd in self.distributor.readmit_caller(
                call_id,
                caller=who,
                arrived_at=arrived,
                now=now,
                offers_made=item.command.offers_made,
            ):
                self._execute(cmd)

    # ---- requests the shell carries out itself --------------------------------

    async def _feature(self, req: FeatureRequest) -> None:
        """A handset feature code: the core's answer, then the channel goes back
        to the dialplan to confirm (or refuse) it. Always back to the
        dialplan: a refused code must never leave the handset in silence."""
        event = feature_event(req)
        with structlog.contextvars.bound_contextvars(taker_id=req.taker_id, feature=req.action):
            ok = event is not None
            reason = ""
            if event is None:
                reason = (
                    "no call taker works on this handset"
                    if req.taker_id is None
                    else "unknown feature code"
                )
            if event is not None:
                try:
                    self.distributor.check(event)
                except core.ProtocolError as exc:
                    log.warning("feature.refused", error=str(exc))
                    ok, reason = False, str(exc)
                else:
                    await self.feed(event)
            log.info("feature.requested", ok=ok)
            if self._on_feature is not None:
                try:
                    self._on_feature(req.taker_id or "", req.action, ok, reason)
                except Exception as exc:  # noqa: BLE001 - never the handset's problem
                    log.error("feature.hook_failed", error=repr(exc)[:300])  # noqa: TRY400
        try:
            await self._telephony.finish_feature(req.channel_id, ok=ok)
        except Exception as exc:  # noqa: BLE001 - the handset hung up already
            log.warning("feature.finish_failed", error=str(exc)[:300])

    async def _resynchronise(self) -> None:
        if self._resync is None:
            return
        if self._resync_retry is not None:  # a newer connection supersedes a retry
            self._resync_retry.cancel()
            self._resync_retry = None
        try:
            await self._resync(self)
        except Exception as exc:  # noqa: BLE001 - retried: the cores must be reconciled
            delay = RESYNC_RETRY_S[min(self._resync_failures, len(RESYNC_RETRY_S) - 1)]
            self._resync_failures += 1
            log.error(  # noqa: TRY400 - the error is the message; no traceback needed
                "recovery.resync_failed",
                error=str(exc)[:300],
                failures=self._resync_failures,
                retry_in_s=delay,
            )
            loop = asyncio.get_running_loop()
            self._resync_retry = loop.call_later(delay, self._retry_resync)
        else:
            self._resync_failures = 0

    def _retry_resync(self) -> None:
        self._resync_retry = None
        self.submit(Resync())

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
                    call_id, caller_identity_of(item.channel), self.distributor.default_queue
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
                await self._telephony.hand_back(call_id)
                log.error("service.caller_rescued_to_fallback", reason=reason)
            except Exception as exc:  # noqa: BLE001 - nothing more we can do here
                log.critical("service.caller_rescue_failed", error=str(exc)[:300])

    # ---- timers, recordings, observers -----------------------------------------

    def _start_timer(self, cmd: core.StartTimer, owner: Owner) -> None:
        """One timer registry for both cores; each expiry goes back to the
        core that started it."""
        old = self._timers.pop(cmd.timer_id, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, cmd.at - self._clock())

        def fire(timer_id: str = cmd.timer_id) -> None:
            self._timers.pop(timer_id, None)
            self.submit(TimerDue(timer_id, owner))

        self._timers[cmd.timer_id] = loop.call_later(delay, fire)

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

    def _recording_due(self, call_id: str) -> None:
        self._recordings_due.pop(call_id, None)
        if not ids.is_safe_id(call_id):
            return
        name = ids.recording_name(call_id)
        incident_id = self._incidents.get(call_id)
        with structlog.contextvars.bound_contextvars(call_id=call_id, incident_id=incident_id):
            log.info("recording.finished", name=name)
            self._notify("recording_done", call_id, name, incident_id)

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


def lane_of(cmd: TelephonyCommand) -> str:
    """The lane a telephony command runs in.

    - A handset offer's ring, cancel and release run in the offer's own lane,
      so that ringing starts at once instead of after the caller's answer,
      bridge and greeting requests, and a cancel never overtakes its ring. A
      dispatcher's ring and cancel likewise run in the leg's lane.
    - Everything else runs in its call's lane, both cores' commands alike, so
      that they reach the call's bridge in the order they were issued.
      Connecting the answered handset needs the bridge, so ``ConnectCall``
      stays in the call's lane (if a release overtakes it, the connect fails
      and the core handles that as it does any failed connect)."""
    if isinstance(cmd, _OFFER_LANE):
        return f"offer:{cmd.attempt_id}"
    if isinstance(cmd, _LEG_LANE):
        return f"leg:{cmd.leg_id}"
    call_id = getattr(cmd, "call_id", None)
    if isinstance(call_id, str):
        return call_id
    for field in ("attempt_id", "leg_id", "snoop_id"):
        value = getattr(cmd, field, None)
        if isinstance(value, str):
            return ids.call_of(value) or value
    return "-"


def _call_of(event: core.Event) -> str | None:
    call_id = getattr(event, "call_id", None)
    if isinstance(call_id, str):
        return call_id
    attempt = getattr(event, "attempt_id", None)
    if isinstance(attempt, str):
        return ids.call_of_offer(attempt)
    return None
