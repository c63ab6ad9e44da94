"""The conference core: OPD dispatchers and supervisors in a live 112 call.

Theory of operation
===================

``Conferences.handle(event, now)`` is the whole interface, in the same shape as
the distribution core: it changes state and returns commands, in order. No
I/O, no clock; timers are the distribution core's ``StartTimer`` /
``CancelTimer`` (ids ``siaga-conf-...``, fired back as ``TimerFired``) and
timeline entries are its ``PublishCallEvent``.

The call. A caller waits and talks in one mixing bridge, recorded from arrival
(see ``siaga_pbx.service._translate``). A *conference* exists from the moment a
taker's handset joins that bridge (``CallConnected``) until the caller leaves
(``CallerLeft``) or the distribution core tears the call down (``CallEnded``).
Nothing here ever stops the recording or destroys the bridge while the caller
is there: joins, leaves, role changes and the handover only add or remove
*other* channels, so the one recording covers the whole call with no gap.

Parties. Every dispatcher or supervisor is a *leg* we originate to a phone,
``siaga-disp-<call>-<n>``. Once answered it takes part in one of two ways:
- in the call bridge: TALK, LISTEN (the leg's own ``in`` direction muted, so
  it hears everyone and nobody hears it) or a supervisor's BARGE (talk);
- on a *snoop* ``siaga-snoop-<call>-<n>`` in a private bridge of the same
  id: WHISPER spies both directions of the taker's channel and whispers into
  what the taker hears (heard by the taker only); a supervisor's LISTEN spies
  both directions of the caller's channel (hears everyone, heard by nobody)
  and so survives a handover.
A short tone tells the call someone joined or left (bridge parties); a
whisperer's arrival is signalled to the taker only; silent monitoring has no
tone. A failure is a tone to the taker's channel only, plus a timeline entry.

Ringing. Adding an agency creates a *dispatch*: its endpoints are rung all at
once (RINGALL: the first to answer joins, the others are cancelled) or one
after the other (ORDERED), ``ring_timeout_s`` per step. When nobody answers
(timer, or every leg failed) the agency's ``fallback`` is rung the same way;
each agency at most once per dispatch, so fallback cycles end. Every ring
ends in exactly one of: answered (DISPATCHER_JOINED), failed
(DISPATCHER_FAILED), cancelled (DISPATCHER_CANCELLED).

Invariants (checked by the hypothesis tests):
- a dispatcher endpoint is in at most one call at a time (ringing or joined);
  a busy endpoint is skipped like a failed one;
- every ring ends answered, failed or cancelled; when a call ends every leg
  is hung up, none stays bridged;
- no command stops the recording or removes the caller while the call lives.

Requests come from the taker's keypad (DTMF on the taker's offer channel only;
the caller's digits never reach this core) or the API. Keypad codes:
``*1``..``*9`` add the agency with that digit, ``*0`` every mass-incident
agency, ``#1``..``#9`` toggle that agency's dispatcher between talk and
listen, ``##1``..``##9`` remove it, ``#0`` hand over. A code not finished
within ``KEY_TIMEOUT_S`` is forgotten. A request that makes no sense now is
never an exception inside ``handle``: it is published as CONFERENCE_REFUSED
(and a keypad one answered with the failure tone). The API calls ``check``
first, which raises ``RemoteProtocolError`` without changing anything.

Handover: allowed only while a party TALKs in the call bridge, so the caller
is never left alone by it. The taker's handset is released by the
distribution core (``HandOverCall`` -> ``TakerHandedOver``); from then on this
core owns the call's end: when the caller leaves it hangs up every leg,
destroys the bridge (``EndConference``) and publishes HUNG_UP.
The caller is never left with nobody talking: when the last talking party
of a handed-over call leaves (hangs up or is removed), the call goes back to
the distribution core (``ReturnCall``, REQUEUED in the timeline) and a call
taker is rung again; switching that last talker to listen is refused.

Restart. Every leg carries its own description in Asterisk (channel
variables ``SIAGA_PARTY`` = ``<kind>:<who>:<origin>``, set at the ring, and
``SIAGA_ROLE``, set at each join and role change), so a restarted service
rebuilds each call's parties with ``adopt`` (see ``siaga_pbx.recovery``).

A party whose phone vanishes (``PartyLost``: its SIP contact stopped answering
qualify, no BYE came) is hung up: a ringing leg fails with reason
``handset-lost`` (and the dispatch moves on), a joined one leaves the call
(DISPATCHER_LEFT, ``reason: handset-lost``, ``failed: true``), exactly as if
it had hung up otherwise.

Races: an answer for a leg we cancelled is hung up; events for unknown legs,
snoops, calls or timers are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, assert_never

from .. import ids
from ..core import (
    CallStage,
    CancelTimer,
    LocalProtocolError,
    PublishCallEvent,
    RemoteProtocolError,
    StartTimer,
    TimerFired,
    ring_failure,
)
from ._commands import (
    BridgeParty,
    BridgeSnoop,
    CancelParty,
    Command,
    Direction,
    DropSnoop,
    EndConference,
    HandOverCall,
    PlayTone,
    ReturnCall,
    RingParty,
    SetMuted,
    SnoopParty,
    Tone,
)
from ._config import Agency, AgencyDirectory, RingStrategy, Role, SuperviseMode
from ._events import (
    AddAgency,
    AddMassIncident,
    AdoptedParty,
    By,
    CallConnected,
    CallEnded,
    CallerLeft,
    DirectoryChanged,
    EndSupervision,
    Event,
    HandOver,
    KeyPressed,
    PartyAnswered,
    PartyCommandFailed,
    PartyGone,
    PartyLost,
    RemoveAgency,
    SetRole,
    SnoopReady,
    Supervise,
    TakerLeft,
)

KEY_TIMEOUT_S: Final = 5.0
SUPERVISOR_RING_S: Final = 30.0
LOST: Final = "handset-lost"  # a leg whose phone vanished (PartyLost)
_Detail = dict[str, str | int | float | bool]
_Kind = Literal["dispatcher", "supervisor"]


@dataclass(slots=True)
class Party:
    """An answered leg taking part in a call."""

    leg_id: str
    n: int
    kind: _Kind
    who: str  # agency code (the one that answered) or supervisor id
    origin: str  # the request's key: the agency asked for, or "sup:<id>"
    endpoint: str
    joined_at: float
    role: Role | None = None  # dispatchers
    mode: SuperviseMode | None = None  # supervisors
    snoop_id: str | None = None  # parties on a snoop

    @property
    def in_bridge(self) -> bool:
        return self.snoop_id is None

    @property
    def talks(self) -> bool:
        return self.in_bridge and (self.role is Role.TALK or self.mode is SuperviseMode.BARGE)

    @property
    def role_value(self) -> str:
        return _value(self.role or self.mode)


@dataclass(slots=True)
class Dispatch:
    """One request being rung: the agency now rung and the chain behind it."""

    origin: str
    kind: _Kind
    agency: str  # the agency rung now ("" for a supervisor)
    by: By
    role: Role | None = None  # asked for; None: the answering agency's default
    mode: SuperviseMode | None = None
    endpoint: str = ""  # a supervisor's phone
    tried: list[str] = field(default_factory=list)
    next_index: int = 0
    legs: dict[str, str] = field(default_factory=dict)  # ringing leg -> endpoint
    timer_id: str | None = None


@dataclass(slots=True)
class Conference:
    call_id: str
    taker_channel: str | None
    taker_id: str = ""
    handed_over: bool = False
    offers_made: int = 0  # the distribution core's attempt numbers used (for ReturnCall)
    parties: dict[str, Party] = field(default_factory=dict)  # leg -> party
    dispatches: dict[str, Dispatch] = field(default_factory=dict)  # origin -> dispatch
    seq: int = 0
    keys: str = ""
    keys_at: float = 0.0

    def party_of(self, origin_or_who: str) -> Party | None:
        return next((p for p in self.parties.values() if origin_or_who in (p.who, p.origin)), None)

    def dispatch_of(self, agency: str) -> Dispatch | None:
        return next((d for d in self.dispatches.values() if agency in (d.origin, d.agency)), None)


class Conferences:
    """Every live call's conference. No I/O."""

    def __init__(self, directory: AgencyDirectory) -> None:
        self._directory = directory
        self._calls: dict[str, Conference] = {}
        self._ringing: dict[str, tuple[str, str]] = {}  # leg -> (call id, dispatch origin)
        self._joined: dict[str, str] = {}  # leg -> call id
        self._busy: dict[str, str] = {}  # endpoint -> leg (ringing or joined)
        self._snoops: dict[str, str] = {}  # snoop id -> leg
        self._timers: dict[str, tuple[str, str]] = {}  # timer id -> (call id, origin)
        self._tones = 0

    # ---- the interface -----------------------------------------------------

    def handle(self, event: Event | TimerFired, now: float) -> list[Command]:
        """Apply one event; return the commands to carry out, in order."""
        match event:
            case CallConnected():
                return self._connected(event)
            case TakerLeft():
                return self._taker_left(event, now)
            case CallerLeft():
                return self._call_over(event.call_id, now, caller_cause=event.cause)
            case CallEnded():
                return self._call_over(event.call_id, now, caller_cause=None)
            case KeyPressed():
                return self._key(event, now)
            case (
                AddAgency()
                | AddMassIncident()
                | RemoveAgency()
                | SetRole()
                | HandOver()
                | Supervise()
                | EndSupervision()
            ):
                return self._request(event, now)
            case PartyAnswered():
                return self._answered(event.leg_id, now)
            case PartyGone():
                return self._gone(event.leg_id, ring_failure(event.cause).value, now)
            case PartyLost():
                return self._lost(event, now)
            case SnoopReady():
                return [BridgeSnoop(event.snoop_id)] if event.snoop_id in self._snoops else []
            case DirectoryChanged():
                self._directory = event.directory
                return []
            case TimerFired():
                entry = self._timers.pop(event.timer_id, None)
                return [] if entry is None else self._ring_timeout(*entry, now)
            case PartyCommandFailed():
                return self._command_failed(event, now)
            case _:  # pragma: no cover - exhaustive
                assert_never(event)

    def check(self, event: Event) -> None:
        """Raise ``RemoteProtocolError`` if the request makes no sense now;
        changes nothing. The API calls it before submitting a request."""
        reason = self._refusal(event)
        if reason is not None:
            raise RemoteProtocolError(reason)

    # ---- read-only views -----------------------------------------------------

    @property
    def directory(self) -> AgencyDirectory:
        return self._directory

    def live_calls(self) -> set[str]:
        return set(self._calls)

    def is_live(self, call_id: str) -> bool:
        return call_id in self._calls

    def legs(self) -> dict[str, str]:
        """Every leg we hold, ringing or joined: leg id -> call id."""
        out = {leg: call for leg, (call, _o) in self._ringing.items()}
        out.update(self._joined)
        return out

    def snoops(self) -> set[str]:
        """Every snoop (channel and private bridge id) a party of ours sits on."""
        return set(self._snoops)

    def busy_endpoints(self) -> dict[str, str]:
        return dict(self._busy)

    def snapshot(self, call_id: str) -> dict[str, Any] | None:
        conf = self._calls.get(call_id)
        if conf is None:
            return None
        return {
            "call_id": call_id,
            "taker_channel": conf.taker_channel,
            "taker_id": conf.taker_id,
            "handed_over": conf.handed_over,
            "parties": [
                {
                    "leg_id": p.leg_id,
                    "kind": p.kind,
                    "who": p.who,
                    "requested": p.origin,
                    "endpoint": p.endpoint,
                    "role": p.role.value if p.role else None,
                    "mode": p.mode.value if p.mode else None,
                    "joined_at": p.joined_at,
                }
                for p in conf.parties.values()
            ],
            "ringing": [
                {
                    "requested": d.origin,
                    "kind": d.kind,
                    "agency": d.agency,
                    "tried": list(d.tried),
                    "legs": sorted(d.legs),
                }
                for d in conf.dispatches.values()
            ],
        }

    def __repr__(self) -> str:
        return (
            f"<Conferences calls={len(self._calls)} ringing={len(self._ringing)}"
            f" joined={len(self._joined)} agencies={len(self._directory.agencies)}>"
        )

    # ---- restart ---------------------------------------------------------------

    def adopt(
        self,
        call_id: str,
        *,
        taker_channel: str | None,
        taker_id: str,
        parties: Sequence[AdoptedParty],
        now: float,
        offers_made: int = 0,
    ) -> list[Command]:
        """Rebuild a call's conference from what Asterisk still holds after our
        restart: its answered parties (rings in progress were hung up by the
        recovery). ``taker_channel`` None: the taker had handed the call over,
        so this core owns the call's end; if nobody talks with the caller any
        more, the call goes back to the queue (``ReturnCall``).

        A whisperer with no taker to whisper to cannot stay: hung up."""
        if call_id in self._calls:
            raise LocalProtocolError(f"adopting conference {call_id!r}: already known")
        conf = Conference(call_id, taker_channel, taker_id, handed_over=taker_channel is None)
        conf.offers_made = offers_made
        self._calls[call_id] = conf
        cmds: list[Command] = []
        for a in parties:
            n = ids.leg_number(a.leg_id)
            p = Party(a.leg_id, n, a.kind, a.who, a.origin, a.endpoint, now)
            if a.kind == "dispatcher":
                p.role = Role(a.role)
            else:
                p.mode = SuperviseMode(a.role)
            p.snoop_id = a.snoop_id
            conf.seq = max(conf.seq, n)
            conf.parties[p.leg_id] = p
            self._joined[p.leg_id] = call_id
            self._busy[p.endpoint] = p.leg_id
            if p.snoop_id is not None:
                self._snoops[p.snoop_id] = p.leg_id
        if taker_channel is None:
            cmds += self._drop_taker_snoops(conf, "taker-left", now)
        return cmds + self._return_if_alone(conf, now)

    # ---- the call ------------------------------------------------------------

    def _connected(self, ev: CallConnected) -> list[Command]:
        conf = self._calls.get(ev.call_id)
        if conf is None:
            self._calls[ev.call_id] = Conference(ev.call_id, ev.taker_channel, ev.taker_id)
        else:  # a new taker after a drop
            conf.taker_channel, conf.taker_id, conf.keys = ev.taker_channel, ev.taker_id, ""
        return []

    def _taker_left(self, ev: TakerLeft, now: float) -> list[Command]:
        conf = self._calls.get(ev.call_id)
        if conf is None or conf.taker_channel != ev.taker_channel:
            return []
        conf.taker_channel, conf.keys = None, ""
        return self._drop_taker_snoops(conf, "taker-left", now)

    def _call_over(self, call_id: str, now: float, *, caller_cause: int | None) -> list[Command]:
        conf = self._calls.pop(call_id, None)
        if conf is None:
            return []
        cmds: list[Command] = []
        for d in list(conf.dispatches.values()):
            cmds += self._cancel_dispatch(conf, d, "call-ended", now)
        for p in list(conf.parties.values()):
            cmds += self._remove_party(conf, p, "call-ended", now, tone=False)
        if conf.handed_over:
            # The distribution core let go of this call at the handover: its end is ours.
            detail: _Detail = {"side": "caller", "handed_over": True}
            if caller_cause is not None:
                detail["cause"] = caller_cause
            cmds += [EndConference(call_id), self._event(call_id, CallStage.HUNG_UP, now, detail)]
        return cmds

    # ---- keypad ----------------------------------------------------------------

    def _key(self, ev: KeyPressed, now: float) -> list[Command]:
        conf = next((c for c in self._calls.values() if c.taker_channel == ev.channel_id), None)
        if conf is None:
            return []  # not a taker in a live call (the caller's digits never count)
        if conf.keys and now - conf.keys_at > KEY_TIMEOUT_S:
            conf.keys = ""
        d = ev.digit
        if not conf.keys:
            if d in "*#":
                conf.keys, conf.keys_at = d, now
            return []
        keys, conf.keys = conf.keys + d, ""
        request: Event | None = None
        if d == "*":
            conf.keys, conf.keys_at = "*", now  # start again
        elif keys == "##":
            conf.keys, conf.keys_at = "##", now
        elif keys == "*0":
            request = AddMassIncident(conf.call_id, by="keypad")
        elif keys == "#0":
            request = HandOver(conf.call_id, by="keypad")
        elif d.isdigit():
            agency = self._directory.by_digit(int(d))
            if agency is None:
                return self._refused(conf.call_id, f"no agency on key {d}", "keypad", now)
            if keys[0] == "*" and len(keys) == 2:
                request = AddAgency(conf.call_id, agency.code, by="keypad")
            elif keys == f"#{d}":
                request = SetRole(conf.call_id, agency.code, None, by="keypad")
            else:
                request = RemoveAgency(conf.call_id, agency.code, by="keypad")
        return [] if request is None else self._request(request, now)

    # ---- requests --------------------------------------------------------------

    def _refusal(self, ev: Event) -> str | None:
        """Why a request cannot be done now (None: it can)."""
        call_id = getattr(ev, "call_id", "")
        conf = self._calls.get(call_id)
        if conf is None:
            return f"call {call_id!r} is not live with a call taker"
        match ev:
            case AddAgency(agency=code):
                if self._directory.get(code) is None:
                    return f"no agency {code!r}"
                if conf.party_of(code) or conf.dispatch_of(code):
                    return f"agency {code!r} is already in the call or being rung"
            case AddMassIncident():
                if not self._directory.mass_incident():
                    return "no agency is marked for mass incidents"
            case RemoveAgency(agency=code):
                if not (conf.party_of(code) or conf.dispatch_of(code)):
                    return f"agency {code!r} is not in the call"
            case SetRole(agency=code):
                p = conf.party_of(code)
                if p is None or p.kind != "dispatcher":
                    return f"agency {code!r} has no dispatcher in the call"
                if not p.in_bridge:
                    return f"agency {code!r} whispers to the taker; it has no talk/listen role"
                others = [o for o in conf.parties.values() if o.talks and o is not p]
                if conf.handed_over and p.talks and not others:
                    return f"agency {code!r} is the only one talking with the caller"
            case HandOver():
                if conf.taker_channel is None:
                    return "no call taker to hand over from"
                if not any(p.talks for p in conf.parties.values()):
                    return "nobody talks with the caller: add a dispatcher (talk) first"
            case Supervise(supervisor=sup, endpoint=endpoint, mode=mode):
                key = f"sup:{sup}"
                if key in conf.dispatches or conf.party_of(key):
                    return f"supervisor {sup!r} is already on this call"
                if endpoint in self._busy:
                    return f"{endpoint} is busy on a call"
                if mode is SuperviseMode.WHISPER and conf.taker_channel is None:
                    return "no call taker to whisper to"
            case EndSupervision(supervisor=sup):
                key = f"sup:{sup}"
                if not (conf.party_of(key) or key in conf.dispatches):
                    return f"supervisor {sup!r} is not on this call"
            case _:
                pass
        return None

    def _request(self, ev: Event, now: float) -> list[Command]:
        by: By = getattr(ev, "by", "api")
        call_id: str = getattr(ev, "call_id", "")
        reason = self._refusal(ev)
        if reason is not None:
            return self._refused(call_id, reason, by, now)
        conf = self._calls[call_id]
        match ev:
            case AddAgency(agency=code, role=role):
                return self._dispatch(conf, Dispatch(code, "dispatcher", code, by, role), now)
            case AddMassIncident():
                cmds: list[Command] = []
                for a in self._directory.mass_incident():
                    if not (conf.party_of(a.code) or conf.dispatch_of(a.code)):
                        cmds += self._dispatch(
                            conf, Dispatch(a.code, "dispatcher", a.code, by), now
                        )
                return cmds
            case RemoveAgency(agency=code):
                return self._remove(conf, code, by, now)
            case SetRole(agency=code, role=role):
                return self._set_role(conf, code, role, by, now)
            case HandOver():
                return self._hand_over(conf, by, now)
            case Supervise(supervisor=sup, endpoint=endpoint, mode=mode):
                d = Dispatch(f"sup:{sup}", "supervisor", "", by, mode=mode, endpoint=endpoint)
                return self._dispatch(conf, d, now)
            case EndSupervision(supervisor=sup):
                return self._remove(conf, f"sup:{sup}", by, now)
            case _:  # pragma: no cover - only requests reach here
                return []

    def _refused(self, call_id: str, reason: str, by: By, now: float) -> list[Command]:
        cmds: list[Command] = []
        conf = self._calls.get(call_id)
        if by == "keypad" and conf is not None and conf.taker_channel is not None:
            cmds.append(self._tone(call_id, Tone.FAILED, conf.taker_channel))
        if conf is None:
            return cmds  # nothing to journal against a call that is not live
        detail: _Detail = {"reason": reason, "by": by}
        return [*cmds, self._event(call_id, CallStage.CONFERENCE_REFUSED, now, detail)]

    def _remove(self, conf: Conference, key: str, by: By, now: float) -> list[Command]:
        cmds: list[Command] = []
        d = conf.dispatch_of(key)
        if d is not None:
            cmds += self._cancel_dispatch(conf, d, f"removed-by-{by}", now)
        p = conf.party_of(key)
        if p is not None:
            cmds += self._remove_party(conf, p, f"removed-by-{by}", now, tone=True)
        return cmds

    def _set_role(
        self, conf: Conference, code: str, role: Role | None, by: By, now: float
    ) -> list[Command]:
        p = conf.party_of(code)
        assert p is not None  # checked
        new = role or (Role.LISTEN if p.role is Role.TALK else Role.TALK)
        if new is p.role:
            return []
        p.role = new
        detail: _Detail = {"agency": p.who, "role": new.value, "leg_id": p.leg_id, "by": by}
        return [
            SetMuted(p.leg_id, muted=new is Role.LISTEN, role=new.value),
            self._event(conf.call_id, CallStage.DISPATCHER_ROLE, now, detail),
        ]

    def _hand_over(self, conf: Conference, by: By, now: float) -> list[Command]:
        conf.handed_over = True
        taker = conf.taker_channel
        offer = ids.parse_offer_id(taker) if taker is not None else None
        if offer is not None:
            conf.offers_made = max(conf.offers_made, offer[1])
        conf.taker_channel, conf.keys = None, ""
        detail: _Detail = {"by": by, "taker_id": conf.taker_id, "taker_channel": taker or ""}
        detail["to"] = ",".join(p.who for p in conf.parties.values() if p.talks)
        return [
            HandOverCall(conf.call_id),
            self._event(conf.call_id, CallStage.HANDED_OVER, now, detail),
            *self._drop_taker_snoops(conf, "taker-left", now),
            self._tone(conf.call_id, Tone.LEFT),
        ]

    # ---- ringing -----------------------------------------------------------------

    def _dispatch(self, conf: Conference, d: Dispatch, now: float) -> list[Command]:
        conf.dispatches[d.origin] = d
        if d.kind == "dispatcher":
            d.tried.append(d.agency)
        return self._ring_step(conf, d, now)

    def _endpoints(self, d: Dispatch) -> tuple[Agency | None, list[str]]:
        """The endpoints to ring in this step (busy ones are skipped)."""
        if d.kind == "supervisor":
            if d.next_index > 0 or d.endpoint in self._busy:
                return None, []
            d.next_index = 1
            return None, [d.endpoint]
        agency = self._directory.get(d.agency)
        if agency is None:
            return None, []
        free = [e for e in agency.endpoints if e not in self._busy]
        if agency.strategy is RingStrategy.RINGALL:
            if d.next_index > 0:
                return agency, []
            d.next_index = len(agency.endpoints)
            return agency, free
        while d.next_index < len(agency.endpoints):
            e = agency.endpoints[d.next_index]
            d.next_index += 1
            if e in free:
                return agency, [e]
        return agency, []

    def _ring_step(self, conf: Conference, d: Dispatch, now: float) -> list[Command]:
        agency, endpoints = self._endpoints(d)
        if not endpoints:
            return self._advance(conf, d, "busy" if agency is not None else "no-endpoint", now)
        timeout = agency.ring_timeout_s if agency is not None else SUPERVISOR_RING_S
        label = f"112 {agency.name}" if agency is not None else "112 supervisi"
        tag = f"{d.kind}:{d.agency or d.origin[4:]}:{d.origin}"
        cmds: list[Command] = []
        for endpoint in endpoints:
            conf.seq += 1
            leg = ids.leg_id(conf.call_id, conf.seq)
            d.legs[leg] = endpoint
            self._ringing[leg] = (conf.call_id, d.origin)
            self._busy[endpoint] = leg
            cmds += [
                RingParty(leg, conf.call_id, endpoint, timeout, label[:40], tag),
                self._party_event(conf, d, "ringing", now, leg_id=leg, endpoint=endpoint),
            ]
        conf.seq += 1
        d.timer_id = ids.conference_timer_id("ring", conf.call_id, conf.seq)
        self._timers[d.timer_id] = (conf.call_id, d.origin)
        return [*cmds, StartTimer(d.timer_id, now + timeout)]

    def _ring_timeout(self, call_id: str, origin: str, now: float) -> list[Command]:
        conf = self._calls.get(call_id)
        d = conf.dispatches.get(origin) if conf else None
        if conf is None or d is None:  # pragma: no cover - cancelled with the dispatch
            return []
        d.timer_id = None
        cmds: list[Command] = []
        for leg in list(d.legs):
            cmds += [
                CancelParty(leg),
                *self._leg_ended(conf, d, leg, "failed", reason="no_answer", now=now),
            ]
        return cmds + self._advance(conf, d, "no_answer", now)

    def _leg_ended(
        self, conf: Conference, d: Dispatch, leg: str, how: str, *, reason: str, now: float
    ) -> list[Command]:
        """One ringing leg is over (failed or cancelled): free its endpoint, journal it."""
        endpoint = d.legs.pop(leg)
        del self._ringing[leg]
        if self._busy.get(endpoint) == leg:
            del self._busy[endpoint]
        return [self._party_event(conf, d, how, now, leg_id=leg, endpoint=endpoint, reason=reason)]

    def _advance(self, conf: Conference, d: Dispatch, reason: str, now: float) -> list[Command]:
        """Nobody answered this step: the next endpoint, the fallback, or give up."""
        if d.kind == "dispatcher":
            agency = self._directory.get(d.agency)
            if (
                agency is not None
                and agency.strategy is RingStrategy.ORDERED
                and d.next_index < len(agency.endpoints)
            ):
                return self._ring_step(conf, d, now)
            fallback = agency.fallback if agency is not None else ""
            if fallback and fallback not in d.tried and self._directory.get(fallback):
                detail: _Detail = {"agency": d.agency, "reason": reason, "next": fallback}
                detail["requested"] = d.origin
                d.agency, d.next_index = fallback, 0
                d.tried.append(fallback)
                return [
                    self._event(conf.call_id, CallStage.DISPATCHER_FAILED, now, detail),
                    *self._ring_step(conf, d, now),
                ]
        del conf.dispatches[d.origin]
        cmds: list[Command] = [
            self._party_event(conf, d, "failed", now, reason=reason, final=True),
        ]
        if conf.taker_channel is not None:
            cmds.append(self._tone(conf.call_id, Tone.FAILED, conf.taker_channel))
        return cmds

    def _cancel_dispatch(
        self, conf: Conference, d: Dispatch, reason: str, now: float
    ) -> list[Command]:
        cmds: list[Command] = []
        for leg in list(d.legs):
            cmds += [
                CancelParty(leg),
                *self._leg_ended(conf, d, leg, "cancelled", reason=reason, now=now),
            ]
        if d.timer_id is not None:
            self._timers.pop(d.timer_id, None)
            cmds.append(CancelTimer(d.timer_id))
        del conf.dispatches[d.origin]
        return cmds

    # ---- legs ----------------------------------------------------------------

    def _answered(self, leg: str, now: float) -> list[Command]:
        if leg in self._joined:
            return []  # a repeated answer
        entry = self._ringing.get(leg)
        if entry is None:
            return [CancelParty(leg)]  # cancelled, timed out or unknown: hang it up
        conf = self._calls[entry[0]]
        d = conf.dispatches[entry[1]]
        endpoint = d.legs.pop(leg)
        del self._ringing[leg]
        cmds: list[Command] = []
        for other in list(d.legs):  # ringall: the first answer wins
            cmds += [CancelParty(other)]
            cmds += self._leg_ended(
                conf, d, other, "cancelled", reason="answered-elsewhere", now=now
            )
        if d.timer_id is not None:
            self._timers.pop(d.timer_id, None)
            cmds.append(CancelTimer(d.timer_id))
        del conf.dispatches[d.origin]
        n = ids.leg_number(leg)
        p = Party(leg, n, d.kind, d.agency or d.origin[4:], d.origin, endpoint, now)
        self._joined[leg] = conf.call_id
        conf.parties[leg] = p
        if d.kind == "dispatcher":
            agency = self._directory.get(d.agency)
            p.role = d.role or (agency.role if agency is not None else Role.TALK)
            if p.role is Role.WHISPER and conf.taker_channel is None:
                p.role = Role.LISTEN  # nobody to whisper to (handed over meanwhile)
        else:
            p.mode = d.mode
            if p.mode is SuperviseMode.WHISPER and conf.taker_channel is None:
                p.mode = SuperviseMode.LISTEN
        return cmds + self._join(conf, p, now)

    def _join(self, conf: Conference, p: Party, now: float) -> list[Command]:
        call_id = conf.call_id
        cmds: list[Command]
        if p.role is Role.WHISPER or p.mode is SuperviseMode.WHISPER:
            assert conf.taker_channel is not None  # checked when answered
            p.snoop_id = ids.snoop_id(call_id, p.n)
            self._snoops[p.snoop_id] = p.leg_id
            cmds = [
                SnoopParty(
                    call_id,
                    p.leg_id,
                    p.snoop_id,
                    conf.taker_channel,
                    Direction.BOTH,
                    Direction.OUT,
                    p.role_value,
                ),
                self._tone(call_id, Tone.JOINED, conf.taker_channel),
            ]
        elif p.mode is SuperviseMode.LISTEN:  # silent monitoring: no tone
            p.snoop_id = ids.snoop_id(call_id, p.n)
            self._snoops[p.snoop_id] = p.leg_id
            cmds = [
                SnoopParty(
                    call_id,
                    p.leg_id,
                    p.snoop_id,
                    call_id,
                    Direction.BOTH,
                    Direction.NONE,
                    p.role_value,
                )
            ]
        else:
            cmds = [
                BridgeParty(call_id, p.leg_id, muted=p.role is Role.LISTEN, role=p.role_value),
                self._tone(call_id, Tone.JOINED),
            ]
        return [*cmds, self._joined_event(conf, p, "joined", now)]

    def _gone(self, leg: str, reason: str, now: float) -> list[Command]:
        entry = self._ringing.get(leg)
        if entry is not None:
            conf = self._calls[entry[0]]
            d = conf.dispatches[entry[1]]
            cmds = self._leg_ended(conf, d, leg, "failed", reason=reason, now=now)
            if d.legs:
                return cmds  # others still ring
            if d.timer_id is not None:
                self._timers.pop(d.timer_id, None)
                cmds.append(CancelTimer(d.timer_id))
                d.timer_id = None
            return cmds + self._advance(conf, d, reason, now)
        call_id = self._joined.get(leg)
        if call_id is None:
            return []  # a leg we already let go
        conf = self._calls[call_id]
        return self._remove_party(conf, conf.parties[leg], "hung-up", now, tone=True, hangup=False)

    def _lost(self, ev: PartyLost, now: float) -> list[Command]:
        """The leg's phone is gone, but Asterisk still holds the leg: hang it up
        (its PartyGone then finds nothing) and end it as a failure."""
        leg = ev.leg_id
        if leg in self._ringing:
            return [CancelParty(leg), *self._gone(leg, LOST, now)]
        call_id = self._joined.get(leg)
        if call_id is None:
            return []  # a leg we already let go
        conf = self._calls[call_id]
        return self._remove_party(conf, conf.parties[leg], LOST, now, tone=True, failed=True)

    def _remove_party(
        self,
        conf: Conference,
        p: Party,
        reason: str,
        now: float,
        *,
        tone: bool,
        hangup: bool = True,
        failed: bool = False,
    ) -> list[Command]:
        del conf.parties[p.leg_id]
        del self._joined[p.leg_id]
        if self._busy.get(p.endpoint) == p.leg_id:
            del self._busy[p.endpoint]
        cmds: list[Command] = [CancelParty(p.leg_id)] if hangup else []
        if p.snoop_id is not None:
            self._snoops.pop(p.snoop_id, None)
            cmds.append(DropSnoop(p.snoop_id))
        if tone and p.in_bridge:
            cmds.append(self._tone(conf.call_id, Tone.LEFT))
        cmds.append(self._joined_event(conf, p, "left", now, reason=reason, failed=failed))
        if self._calls.get(conf.call_id) is conf:  # not while the whole call ends
            cmds += self._return_if_alone(conf, now)
        return cmds

    def _return_if_alone(self, conf: Conference, now: float) -> list[Command]:
        """After a handover the caller must never be left with nobody talking:
        when the last talking party goes, the call goes back to the
        distribution core, which queues the caller again (by their original
        arrival, so ahead of later callers) and rings a call taker. Parties
        still listening or ringing stay; the new taker finds them there."""
        if not conf.handed_over or any(p.talks for p in conf.parties.values()):
            return []
        conf.handed_over = False
        detail: _Detail = {"reason": "no-party-talking", "after": "handover"}
        return [
            ReturnCall(conf.call_id, conf.offers_made),
            self._event(conf.call_id, CallStage.REQUEUED, now, detail),
        ]

    def _drop_taker_snoops(self, conf: Conference, reason: str, now: float) -> list[Command]:
        """Whisperers spy on the taker's channel: they go when the taker goes."""
        cmds: list[Command] = []
        for p in list(conf.parties.values()):
            if p.role is Role.WHISPER or p.mode is SuperviseMode.WHISPER:
                cmds += self._remove_party(conf, p, reason, now, tone=False)
        return cmds

    def _command_failed(self, ev: PartyCommandFailed, now: float) -> list[Command]:
        cmd = ev.command
        if isinstance(cmd, RingParty):
            return self._gone(cmd.leg_id, "originate-failed", now)
        if isinstance(cmd, (BridgeParty, SnoopParty)) and cmd.leg_id in self._joined:
            conf = self._calls[self._joined[cmd.leg_id]]
            cmds = self._remove_party(
                conf, conf.parties[cmd.leg_id], "join-failed", now, tone=False
            )
            if conf.taker_channel is not None:
                cmds.append(self._tone(conf.call_id, Tone.FAILED, conf.taker_channel))
            return cmds
        return []  # tones, mutes, hangups of things already gone: nothing to recover

    # ---- helpers -------------------------------------------------------------

    def _tone(self, call_id: str, tone: Tone, channel_id: str = "") -> PlayTone:
        self._tones += 1
        return PlayTone(call_id, tone, ids.tone_id(call_id, self._tones), channel_id)

    @staticmethod
    def _event(call_id: str, stage: CallStage, now: float, detail: _Detail) -> PublishCallEvent:
        return PublishCallEvent(call_id, stage, now, detail)

    def _party_event(
        self,
        conf: Conference,
        d: Dispatch,
        how: str,
        now: float,
        **detail: str | bool,
    ) -> PublishCallEvent:
        """A ring's timeline entry: ringing, failed or cancelled."""
        body: _Detail = {"by": d.by, **detail}
        if d.kind == "supervisor":
            body.update(action=how, supervisor=d.origin[4:], mode=_value(d.mode), audit=True)
            return self._event(conf.call_id, CallStage.SUPERVISOR, now, body)
        body.update(agency=d.agency, requested=d.origin)
        stage = {
            "ringing": CallStage.DISPATCHER_RINGING,
            "failed": CallStage.DISPATCHER_FAILED,
            "cancelled": CallStage.DISPATCHER_CANCELLED,
        }[how]
        return self._event(conf.call_id, stage, now, body)

    def _joined_event(
        self,
        conf: Conference,
        p: Party,
        how: str,
        now: float,
        reason: str = "",
        *,
        failed: bool = False,
    ) -> PublishCallEvent:
        body: _Detail = {"leg_id": p.leg_id, "endpoint": p.endpoint}
        if reason:
            body["reason"] = reason
        if failed:
            body["failed"] = True
        if how == "left":
            body["in_call_s"] = round(now - p.joined_at, 3)
        if p.kind == "supervisor":
            body.update(action=how, supervisor=p.who, mode=_value(p.mode), audit=True)
            return self._event(conf.call_id, CallStage.SUPERVISOR, now, body)
        body.update(agency=p.who, requested=p.origin, role=_value(p.role))
        stage = CallStage.DISPATCHER_JOINED if how == "joined" else CallStage.DISPATCHER_LEFT
        return self._event(conf.call_id, stage, now, body)


def _value(v: Role | SuperviseMode | None) -> str:
    return v.value if v is not None else ""
