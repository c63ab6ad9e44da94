"""Hypothesis drives a real conference core through random event sequences and
checks its invariants after every step, against a model of the world built
only from the commands it issued and the events we fed it."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from siaga_pbx.conference import (
    AddAgency,
    AddMassIncident,
    Agency,
    AgencyDirectory,
    BridgeParty,
    CallConnected,
    CallEnded,
    CallerLeft,
    CancelParty,
    Command,
    Conferences,
    EndConference,
    Event,
    HandOver,
    HandOverCall,
    KeyPressed,
    PartyAnswered,
    PartyCommandFailed,
    PartyGone,
    RemoveAgency,
    ReturnCall,
    RingParty,
    RingStrategy,
    Role,
    SetRole,
    SnoopParty,
    Supervise,
    SuperviseMode,
    TakerLeft,
)
from siaga_pbx.core import CallStage, PublishCallEvent, StartTimer, TimerFired

CALLS = ("c1", "c2", "c3")
AGENCIES = AgencyDirectory(
    (
        Agency("damkar", "Damkar", ("PJSIP/d1", "PJSIP/d2"), 1, fallback="polisi",
               mass_incident=True),
        Agency("dinkes", "Dinkes", ("PJSIP/k1",), 2, fallback="damkar", mass_incident=True,
               role=Role.LISTEN),
        Agency("polisi", "Polisi", ("PJSIP/p1", "PJSIP/p2"), 3, strategy=RingStrategy.ORDERED,
               fallback="dinkes", role=Role.WHISPER),
    )
)  # fmt: skip


def taker(call: str) -> str:
    return f"siaga-offer-{call}-1"


class ConferenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core = Conferences(AGENCIES)
        self.now = 0.0
        self.live: set[str] = set()  # calls with a conference (caller present)
        self.ringing: dict[str, str] = {}  # leg -> endpoint, from RingParty
        self.bridged: dict[str, str] = {}  # leg -> call, answered and joined
        self.ended_rings: set[str] = set()
        self.timers: set[str] = set()
        self.ended_calls: set[str] = set()
        self.returned: set[str] = set()

    def feed(self, event: Event | TimerFired) -> list[Command]:
        self.now += 1.0
        cmds = self.core.handle(event, self.now)
        for c in cmds:
            self.apply(c)
        return cmds

    def apply(self, c: Command) -> None:
        match c:
            case RingParty(leg_id=leg, endpoint=endpoint):
                assert leg not in self.ringing and leg not in self.ended_rings
                self.ringing[leg] = endpoint
            case CancelParty(leg_id=leg):
                if leg in self.ringing:
                    self.ringing.pop(leg)
                    self.ended_rings.add(leg)
                self.bridged.pop(leg, None)
            case BridgeParty(leg_id=leg, call_id=call) | SnoopParty(leg_id=leg, call_id=call):
                assert call in self.live, "a party joins a call that is over"
                self.ringing.pop(leg)
                self.ended_rings.add(leg)
                self.bridged[leg] = call
            case EndConference(call_id=call):
                assert call not in self.live, "the recording stops while the caller is there"
            case StartTimer(timer_id=t):
                self.timers.add(t)
            case PublishCallEvent(stage=CallStage.HUNG_UP, call_id=call):
                assert call not in self.live
            case HandOverCall(call_id=call):
                assert call in self.live
            case ReturnCall(call_id=call):
                assert call in self.live, "a call that is over goes back to the queue"
                self.returned.add(call)
            case _:
                pass

    # ---- rules -----------------------------------------------------------

    @rule(call=st.sampled_from(CALLS))
    def connect(self, call: str) -> None:
        if call in self.ended_calls:
            return  # a call id is never reused
        self.live.add(call)
        self.feed(CallConnected(call, taker(call)))

    @rule(call=st.sampled_from(CALLS), agency=st.sampled_from(["damkar", "dinkes", "polisi"]))
    def add(self, call: str, agency: str) -> None:
        self.feed(AddAgency(call, agency))

    @rule(call=st.sampled_from(CALLS))
    def mass(self, call: str) -> None:
        self.feed(AddMassIncident(call))

    @rule(call=st.sampled_from(CALLS), keys=st.text("0123456789*#", min_size=1, max_size=4))
    def press(self, call: str, keys: str) -> None:
        for k in keys:
            self.feed(KeyPressed(taker(call), k))

    @rule(call=st.sampled_from(CALLS), agency=st.sampled_from(["damkar", "dinkes", "polisi"]))
    def remove(self, call: str, agency: str) -> None:
        self.feed(RemoveAgency(call, agency))

    @rule(call=st.sampled_from(CALLS), agency=st.sampled_from(["damkar", "dinkes"]))
    def toggle(self, call: str, agency: str) -> None:
        self.feed(SetRole(call, agency))

    @rule(call=st.sampled_from(CALLS))
    def hand_over(self, call: str) -> None:
        self.feed(HandOver(call))

    @rule(call=st.sampled_from(CALLS), mode=st.sampled_from(list(SuperviseMode)))
    def supervise(self, call: str, mode: SuperviseMode) -> None:
        self.feed(Supervise(call, "spv", "PJSIP/spv", mode))

    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        legs = sorted(self.ringing) + sorted(self.ended_rings)
        if legs:
            self.feed(PartyAnswered(data.draw(st.sampled_from(legs))))

    @rule(data=st.data(), cause=st.sampled_from([16, 17, 18, 21, 34]))
    def gone(self, data: st.DataObject, cause: int) -> None:
        legs = sorted(self.ringing) + sorted(self.bridged)
        if legs:
            leg = data.draw(st.sampled_from(legs))
            if leg in self.ringing:
                self.ended_rings.add(leg)
            self.ringing.pop(leg, None)
            self.bridged.pop(leg, None)
            self.feed(PartyGone(leg, cause))

    @rule(data=st.data())
    def timer(self, data: st.DataObject) -> None:
        if self.timers:
            self.feed(TimerFired(data.draw(st.sampled_from(sorted(self.timers)))))

    @rule(data=st.data())
    def ring_fails(self, data: st.DataObject) -> None:
        if self.ringing:
            leg = data.draw(st.sampled_from(sorted(self.ringing)))
            ring = RingParty(leg, "c1", self.ringing.pop(leg), 10, "x")
            self.ended_rings.add(leg)  # the originate failed: the ring is over
            self.feed(PartyCommandFailed(ring, "boom"))

    @rule(call=st.sampled_from(CALLS))
    def taker_left(self, call: str) -> None:
        self.feed(TakerLeft(call, taker(call)))

    @rule(call=st.sampled_from(CALLS), caller=st.booleans())
    def end(self, call: str, caller: bool) -> None:
        self.live.discard(call)
        self.ended_calls.add(call)
        self.feed(CallerLeft(call) if caller else CallEnded(call))
        assert call not in self.bridged.values(), "a dispatcher stays bridged after the end"
        assert not any(c == call for c in self.core.legs().values())

    # ---- invariants ---------------------------------------------------------

    @invariant()
    def dispatcher_in_one_call_at_most(self) -> None:
        endpoints = list(self.ringing.values())
        assert len(endpoints) == len(set(endpoints)), "an endpoint rung twice at once"
        busy = self.core.busy_endpoints()
        assert len(set(busy.values())) == len(busy)
        assert set(self.core.legs().values()) <= self.live

    @invariant()
    def a_handed_over_caller_always_has_someone_talking(self) -> None:
        for call in self.live:
            snap = self.core.snapshot(call)
            if snap is not None and snap["handed_over"]:
                talking = [p for p in snap["parties"] if "talk" in (p["role"], p["mode"])]
                barging = [p for p in snap["parties"] if p["mode"] == "barge"]
                assert talking or barging, f"{call}: handed over, nobody talks: {snap}"

    @invariant()
    def core_and_model_agree_on_legs(self) -> None:
        assert set(self.core.legs()) == set(self.ringing) | set(self.bridged)

    def teardown(self) -> None:
        for call in sorted(self.live):
            self.end(call, caller=True)
        assert self.ringing == {}, "a ring never ended"
        assert self.bridged == {}
        assert self.core.legs() == {}
        assert self.core.busy_endpoints() == {}


ConferenceMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestConferenceStateful = ConferenceMachine.TestCase
TestConferenceStateful.__doc__ = "Random event sequences keep the conference invariants."
