"""Scenario tests of the conference core: key flows, asserting the exact commands."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from siaga_pbx.conference import (
    AddAgency,
    AddMassIncident,
    AdoptedParty,
    Agency,
    AgencyDirectory,
    BridgeParty,
    BridgeSnoop,
    CallConnected,
    CallEnded,
    CallerLeft,
    CancelParty,
    Conferences,
    Direction,
    DropSnoop,
    EndConference,
    HandOver,
    HandOverCall,
    KeyPressed,
    PartyAnswered,
    PartyCommandFailed,
    PartyGone,
    PlayTone,
    RemoveAgency,
    ReturnCall,
    RingParty,
    RingStrategy,
    Role,
    SetMuted,
    SetRole,
    SnoopParty,
    SnoopReady,
    Supervise,
    SuperviseMode,
    TakerLeft,
    Tone,
)
from siaga_pbx.core import (
    CallStage,
    CancelTimer,
    LocalProtocolError,
    PublishCallEvent,
    RemoteProtocolError,
    StartTimer,
    TimerFired,
)

C = "1700000000.1"
TAKER = f"siaga-offer-{C}-1"


def leg(n: int, call: str = C) -> str:
    return f"siaga-disp-{call}-{n}"


def lab() -> AgencyDirectory:
    return AgencyDirectory(
        (
            Agency("damkar", "Damkar", ("PJSIP/disp-damkar",), 1, fallback="polisi",
                   ring_timeout_s=10, mass_incident=True),
            Agency("dinkes", "Dinkes", ("PJSIP/disp-dinkes",), 2, fallback="damkar",
                   ring_timeout_s=10, mass_incident=True),
            Agency("polisi", "Polisi", ("PJSIP/disp-polisi",), 3, fallback="dinkes",
                   ring_timeout_s=10),
        )
    )  # fmt: skip


def stages(cmds: Sequence[object]) -> list[str]:
    return [c.stage.value for c in cmds if isinstance(c, PublishCallEvent)]


def telephony(cmds: Sequence[object]) -> list[object]:
    """Commands without timeline entries; tone playback ids blanked."""
    out: list[object] = []
    for c in cmds:
        if isinstance(c, PublishCallEvent):
            continue
        out.append(PlayTone(c.call_id, c.tone, "", c.channel_id) if isinstance(c, PlayTone) else c)
    return out


def tone(t: Tone, channel: str = "") -> PlayTone:
    return PlayTone(C, t, "", channel)


@pytest.fixture
def conf() -> Conferences:
    core = Conferences(lab())
    assert core.handle(CallConnected(C, TAKER, "taker1"), 0.0) == []
    return core


def join(core: Conferences, agency: str, n: int, at: float = 1.0) -> None:
    core.handle(AddAgency(C, agency), at)
    core.handle(PartyAnswered(leg(n)), at + 1)


class TestRinging:
    def test_add_agency_rings_its_endpoint_with_a_timer(self, conf: Conferences) -> None:
        """Adding Damkar rings its dispatcher with a deterministic leg id and a ring timer."""
        cmds = conf.handle(AddAgency(C, "damkar", by="keypad"), 1.0)
        assert telephony(cmds) == [
            RingParty(leg(1), C, "PJSIP/disp-damkar", 10, "112 Damkar", "dispatcher:damkar:damkar"),
            StartTimer(f"siaga-conf-ring-{C}-2", 11.0),
        ]
        assert stages(cmds) == ["dispatcher_ringing"]
        detail = cmds[1].detail  # type: ignore[union-attr]
        assert detail == {"by": "keypad", "leg_id": leg(1), "endpoint": "PJSIP/disp-damkar",
                          "agency": "damkar", "requested": "damkar"}  # fmt: skip

    def test_answer_joins_the_bridge_with_a_tone(self, conf: Conferences) -> None:
        """The first answer joins the call bridge unmuted and a joined tone plays to the call."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        cmds = conf.handle(PartyAnswered(leg(1)), 2.0)
        assert telephony(cmds) == [
            CancelTimer(f"siaga-conf-ring-{C}-2"),
            BridgeParty(C, leg(1), muted=False, role="talk"),
            tone(Tone.JOINED),
        ]
        assert stages(cmds) == ["dispatcher_joined"]

    def test_ringall_first_answer_wins(self) -> None:
        """With several endpoints rung at once the others are cancelled when one answers."""
        directory = AgencyDirectory(
            (Agency("bpbd", "BPBD", ("PJSIP/a", "PJSIP/b"), 4, strategy=RingStrategy.RINGALL),)
        )
        core = Conferences(directory)
        core.handle(CallConnected(C, TAKER), 0.0)
        cmds = core.handle(AddAgency(C, "bpbd"), 1.0)
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/a", "PJSIP/b"]
        cmds = core.handle(PartyAnswered(leg(2)), 2.0)
        assert CancelParty(leg(1)) in cmds
        assert stages(cmds) == ["dispatcher_cancelled", "dispatcher_joined"]
        assert core.busy_endpoints() == {"PJSIP/b": leg(2)}

    def test_ordered_rings_the_next_endpoint_on_timeout(self) -> None:
        """In order: the second endpoint rings when the first does not answer in time."""
        directory = AgencyDirectory(
            (Agency("bpbd", "BPBD", ("PJSIP/a", "PJSIP/b"), strategy=RingStrategy.ORDERED),)
        )
        core = Conferences(directory)
        core.handle(CallConnected(C, TAKER), 0.0)
        cmds = core.handle(AddAgency(C, "bpbd"), 1.0)
        timer = next(c for c in cmds if isinstance(c, StartTimer))
        cmds = core.handle(TimerFired(timer.timer_id), 21.0)
        assert CancelParty(leg(1)) in cmds
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/b"]

    def test_timeout_rings_the_fallback_and_the_timeline_says_so(self, conf: Conferences) -> None:
        """Damkar not answering in time rings its fallback, Polisi."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        cmds = conf.handle(TimerFired(f"siaga-conf-ring-{C}-2"), 11.0)
        assert telephony(cmds) == [
            CancelParty(leg(1)),
            RingParty(leg(3), C, "PJSIP/disp-polisi", 10, "112 Polisi", "dispatcher:polisi:damkar"),
            StartTimer(f"siaga-conf-ring-{C}-4", 21.0),
        ]
        assert stages(cmds) == ["dispatcher_failed", "dispatcher_failed", "dispatcher_ringing"]
        assert cmds[2].detail["next"] == "polisi"  # type: ignore[union-attr]

    def test_busy_failure_moves_on_at_once(self, conf: Conferences) -> None:
        """A busy dispatcher (Q.850 17) is a failed ring; the fallback rings at once."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        cmds = conf.handle(PartyGone(leg(1), cause=17), 2.0)
        assert CancelTimer(f"siaga-conf-ring-{C}-2") in cmds
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/disp-polisi"]
        assert cmds[0].detail["reason"] == "busy"  # type: ignore[union-attr]

    def test_nobody_answers_anywhere_signals_the_taker(self, conf: Conferences) -> None:
        """After the whole fallback chain fails the taker alone hears the failure tone."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        for n in (1, 3, 5):  # damkar, polisi, dinkes
            cmds = conf.handle(PartyGone(leg(n), cause=18), 2.0 + n)
        assert tone(Tone.FAILED, TAKER) in telephony(cmds)
        assert cmds[-2].detail["final"] is True  # type: ignore[union-attr]
        assert conf.snapshot(C)["ringing"] == []  # type: ignore[index]

    def test_an_endpoint_busy_in_another_call_is_skipped(self, conf: Conferences) -> None:
        """A dispatcher already in a call is never rung for a second one."""
        join(conf, "damkar", 1)
        other = "1700000000.2"
        conf.handle(CallConnected(other, f"siaga-offer-{other}-1"), 3.0)
        cmds = conf.handle(AddAgency(other, "damkar"), 4.0)
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/disp-polisi"]

    def test_late_answer_of_a_cancelled_leg_is_hung_up(self, conf: Conferences) -> None:
        """An answer that arrives after the ring was given up is hung up, never bridged."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        conf.handle(TimerFired(f"siaga-conf-ring-{C}-2"), 11.0)
        assert conf.handle(PartyAnswered(leg(1)), 11.1) == [CancelParty(leg(1))]

    def test_originate_failure_is_a_failed_ring(self, conf: Conferences) -> None:
        """A RingParty the shell could not carry out is a failed ring."""
        cmds = conf.handle(AddAgency(C, "damkar"), 1.0)
        ring = next(c for c in cmds if isinstance(c, RingParty))
        cmds = conf.handle(PartyCommandFailed(ring, "boom"), 1.1)
        assert cmds[0].detail["reason"] == "originate-failed"  # type: ignore[union-attr]


class TestKeypad:
    def test_star_digit_adds_the_agency(self, conf: Conferences) -> None:
        """*2 on the taker's channel rings Dinkes."""
        assert conf.handle(KeyPressed(TAKER, "*"), 1.0) == []
        cmds = conf.handle(KeyPressed(TAKER, "2"), 1.2)
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/disp-dinkes"]

    def test_caller_digits_are_ignored(self, conf: Conferences) -> None:
        """Digits from any channel but the taker's offer channel do nothing."""
        assert conf.handle(KeyPressed(C, "*"), 1.0) == []
        assert conf.handle(KeyPressed(C, "1"), 1.1) == []
        assert conf.snapshot(C)["ringing"] == []  # type: ignore[index]

    def test_star_zero_rings_every_mass_incident_agency(self, conf: Conferences) -> None:
        """*0 rings Damkar and Dinkes (mass incident), not Polisi."""
        conf.handle(KeyPressed(TAKER, "*"), 1.0)
        cmds = conf.handle(KeyPressed(TAKER, "0"), 1.1)
        endpoints = [c.endpoint for c in cmds if isinstance(c, RingParty)]
        assert endpoints == ["PJSIP/disp-damkar", "PJSIP/disp-dinkes"]

    def test_hash_digit_toggles_talk_and_listen(self, conf: Conferences) -> None:
        """#1 mutes Damkar's dispatcher; #1 again unmutes them."""
        join(conf, "damkar", 1)
        conf.handle(KeyPressed(TAKER, "#"), 3.0)
        cmds = conf.handle(KeyPressed(TAKER, "1"), 3.1)
        assert telephony(cmds) == [SetMuted(leg(1), muted=True, role="listen")]
        conf.handle(KeyPressed(TAKER, "#"), 4.0)
        assert telephony(conf.handle(KeyPressed(TAKER, "1"), 4.1)) == [
            SetMuted(leg(1), False, "talk")
        ]

    def test_hash_hash_digit_removes_the_agency(self, conf: Conferences) -> None:
        """##1 hangs up Damkar's dispatcher with a left tone to the call."""
        join(conf, "damkar", 1)
        for d in "##":
            conf.handle(KeyPressed(TAKER, d), 3.0)
        cmds = conf.handle(KeyPressed(TAKER, "1"), 3.1)
        assert telephony(cmds) == [CancelParty(leg(1)), tone(Tone.LEFT)]
        assert cmds[-1].detail["reason"] == "removed-by-keypad"  # type: ignore[union-attr]

    def test_unknown_digit_or_stale_code_is_refused_to_the_taker(self, conf: Conferences) -> None:
        """*9 (no agency) gives the taker the failure tone; a slow code is forgotten."""
        conf.handle(KeyPressed(TAKER, "*"), 1.0)
        cmds = conf.handle(KeyPressed(TAKER, "9"), 1.1)
        assert telephony(cmds) == [tone(Tone.FAILED, TAKER)]
        assert stages(cmds) == ["conference_refused"]
        conf.handle(KeyPressed(TAKER, "*"), 2.0)
        assert conf.handle(KeyPressed(TAKER, "1"), 20.0) == []  # after KEY_TIMEOUT_S


class TestRoles:
    def test_listen_role_joins_muted(self, conf: Conferences) -> None:
        """A listen-only dispatcher joins the bridge muted."""
        conf.handle(AddAgency(C, "damkar", role=Role.LISTEN), 1.0)
        cmds = conf.handle(PartyAnswered(leg(1)), 2.0)
        assert BridgeParty(C, leg(1), muted=True, role="listen") in cmds

    def test_whisper_role_snoops_on_the_taker(self, conf: Conferences) -> None:
        """A whispering dispatcher is put on a snoop of the taker, heard by the taker only."""
        conf.handle(AddAgency(C, "damkar", role=Role.WHISPER), 1.0)
        cmds = conf.handle(PartyAnswered(leg(1)), 2.0)
        snoop = f"siaga-snoop-{C}-1"
        assert telephony(cmds)[1:] == [
            SnoopParty(C, leg(1), snoop, TAKER, Direction.BOTH, Direction.OUT, "whisper"),
            tone(Tone.JOINED, TAKER),
        ]
        assert conf.handle(SnoopReady(snoop), 2.1) == [BridgeSnoop(snoop)]
        assert conf.handle(SnoopReady("siaga-snoop-probe-x"), 2.2) == []

    def test_role_change_of_a_whisperer_is_refused(self, conf: Conferences) -> None:
        """Talk/listen switching does not apply to a whisperer: the API hears 409."""
        conf.handle(AddAgency(C, "damkar", role=Role.WHISPER), 1.0)
        conf.handle(PartyAnswered(leg(1)), 2.0)
        with pytest.raises(RemoteProtocolError, match="whispers"):
            conf.check(SetRole(C, "damkar", Role.LISTEN))


class TestHandover:
    def test_handover_without_a_talking_party_is_refused(self, conf: Conferences) -> None:
        """The caller is never left alone: no talker in the bridge, no handover."""
        with pytest.raises(RemoteProtocolError, match="nobody talks"):
            conf.check(HandOver(C))
        conf.handle(AddAgency(C, "damkar", role=Role.LISTEN), 1.0)
        conf.handle(PartyAnswered(leg(1)), 2.0)
        assert stages(conf.handle(HandOver(C), 3.0)) == ["conference_refused"]

    def test_handover_releases_the_taker_and_keeps_the_call(self, conf: Conferences) -> None:
        """Handover tells the distribution core, plays a left tone, and nothing else changes."""
        join(conf, "damkar", 1)
        cmds = conf.handle(HandOver(C, by="keypad"), 3.0)
        assert telephony(cmds) == [HandOverCall(C), tone(Tone.LEFT)]
        assert stages(cmds) == ["handed_over"]
        assert conf.handle(TakerLeft(C, TAKER), 3.1) == []  # its handset going is expected

    def test_after_handover_the_callers_hangup_ends_the_call_here(self, conf: Conferences) -> None:
        """After a handover this core hangs up the dispatcher, ends the bridge, says HUNG_UP."""
        join(conf, "damkar", 1)
        conf.handle(HandOver(C), 3.0)
        cmds = conf.handle(CallerLeft(C, 16), 9.0)
        assert telephony(cmds) == [CancelParty(leg(1)), EndConference(C)]
        assert stages(cmds) == ["dispatcher_left", "hung_up"]
        assert cmds[-1].detail == {"side": "caller", "handed_over": True, "cause": 16}  # type: ignore[union-attr]

    def test_last_talker_leaving_after_handover_returns_the_caller(self, conf: Conferences) -> None:
        """Nobody talks with a handed-over caller any more: the call goes back to the queue."""
        join(conf, "damkar", 1)
        conf.handle(HandOver(C), 3.0)
        cmds = conf.handle(PartyGone(leg(1)), 5.0)
        assert telephony(cmds) == [tone(Tone.LEFT), ReturnCall(C, offers_made=1)]
        assert stages(cmds) == ["dispatcher_left", "requeued"]
        assert cmds[-1].detail == {"reason": "no-party-talking", "after": "handover"}  # type: ignore[union-attr]
        # The distribution core now owns the call again: a new taker connects.
        assert conf.handle(CallConnected(C, f"siaga-offer-{C}-2", "taker2"), 6.0) == []
        assert conf.snapshot(C)["taker_channel"] == f"siaga-offer-{C}-2"  # type: ignore[index]
        assert conf.handle(CallEnded(C), 9.0) == []  # the distribution core ends it: no HUNG_UP

    def test_removing_the_last_talker_after_handover_returns_the_caller(
        self, conf: Conferences
    ) -> None:
        """A listener alone is no company: removing the talker requeues the caller."""
        join(conf, "damkar", 1)
        conf.handle(AddAgency(C, "dinkes", role=Role.LISTEN), 3.0)
        conf.handle(PartyAnswered(leg(3)), 3.5)
        conf.handle(HandOver(C), 4.0)
        cmds = conf.handle(RemoveAgency(C, "damkar"), 5.0)
        assert ReturnCall(C, offers_made=1) in cmds
        assert conf.snapshot(C)["parties"][0]["who"] == "dinkes"  # type: ignore[index]

    def test_one_of_two_talkers_leaving_keeps_the_handover(self, conf: Conferences) -> None:
        """While someone still talks with the caller, the call stays handed over."""
        join(conf, "damkar", 1)
        join(conf, "dinkes", 3, at=3.0)
        conf.handle(HandOver(C), 5.0)
        cmds = conf.handle(PartyGone(leg(1)), 6.0)
        assert not any(isinstance(c, ReturnCall) for c in cmds)
        assert conf.snapshot(C)["handed_over"] is True  # type: ignore[index]

    def test_the_last_talker_cannot_switch_to_listen_after_handover(
        self, conf: Conferences
    ) -> None:
        """Switching the only talker to listen would leave the caller alone: refused."""
        join(conf, "damkar", 1)
        conf.handle(HandOver(C), 3.0)
        with pytest.raises(RemoteProtocolError, match="only one talking"):
            conf.check(SetRole(C, "damkar", Role.LISTEN))
        assert stages(conf.handle(SetRole(C, "damkar"), 4.0)) == ["conference_refused"]


class TestAdoption:
    def party(
        self, n: int, who: str = "damkar", role: str = "talk", snoop: bool = False
    ) -> AdoptedParty:
        return AdoptedParty.from_tags(
            leg(n),
            f"PJSIP/disp-{who}",
            f"dispatcher:{who}:{who}",
            role,
            f"siaga-snoop-{C}-{n}" if snoop else None,
        )

    def test_connected_call_with_a_dispatcher_is_rebuilt(self) -> None:
        """After a restart the party is known again: role changes and hangups work."""
        core = Conferences(lab())
        cmds = core.adopt(C, taker_channel=TAKER, taker_id="taker1",
                          parties=[self.party(4, role="listen")], now=50.0)  # fmt: skip
        assert cmds == []
        assert core.legs() == {leg(4): C}
        assert core.busy_endpoints() == {"PJSIP/disp-damkar": leg(4)}
        assert telephony(core.handle(SetRole(C, "damkar"), 51.0)) == [
            SetMuted(leg(4), muted=False, role="talk")
        ]
        ring = telephony(core.handle(AddAgency(C, "dinkes"), 52.0))
        assert ring[0] == RingParty(leg(5), C, "PJSIP/disp-dinkes", 10, "112 Dinkes",
                                    "dispatcher:dinkes:dinkes")  # fmt: skip
        assert telephony(core.handle(CallEnded(C), 53.0))[-1] == CancelParty(leg(4))

    def test_handed_over_call_is_owned_here_again(self) -> None:
        """A handed-over call (no taker) stays with its dispatcher; its end is ours."""
        core = Conferences(lab())
        assert core.adopt(C, taker_channel=None, taker_id="", parties=[self.party(1)],
                          now=50.0, offers_made=2) == []  # fmt: skip
        cmds = core.handle(CallerLeft(C, 16), 60.0)
        assert telephony(cmds) == [CancelParty(leg(1)), EndConference(C)]

    def test_handed_over_call_with_only_a_listener_goes_back_to_the_queue(self) -> None:
        core = Conferences(lab())
        listener = [self.party(1, role="listen")]
        cmds = core.adopt(
            C, taker_channel=None, taker_id="", parties=listener, now=50.0, offers_made=2
        )
        assert telephony(cmds) == [ReturnCall(C, offers_made=2)]
        assert stages(cmds) == ["requeued"]

    def test_a_whisperer_without_a_taker_is_let_go(self) -> None:
        core = Conferences(lab())
        parties = [self.party(1), self.party(3, "dinkes", "whisper", snoop=True)]
        cmds = core.adopt(C, taker_channel=None, taker_id="", parties=parties, now=50.0)
        assert telephony(cmds) == [CancelParty(leg(3)), DropSnoop(f"siaga-snoop-{C}-3")]
        assert core.legs() == {leg(1): C}

    def test_adopting_twice_is_a_bug(self) -> None:
        core = Conferences(lab())
        core.adopt(C, taker_channel=TAKER, taker_id="t", parties=[], now=1.0)
        with pytest.raises(LocalProtocolError):
            core.adopt(C, taker_channel=TAKER, taker_id="t", parties=[], now=2.0)

    @pytest.mark.parametrize(
        ("party", "role"),
        [
            ("", "talk"),
            ("caller:x:x", "talk"),
            ("dispatcher::damkar", "talk"),
            ("dispatcher:damkar:damkar", "sing"),
            ("supervisor:spv:sup:spv", "talk"),
        ],
    )
    def test_malformed_leg_variables_are_refused(self, party: str, role: str) -> None:
        with pytest.raises(ValueError, match=r"bad|needs"):
            AdoptedParty.from_tags(leg(1), "PJSIP/x", party, role, None)


class TestCallEnd:
    def test_call_end_hangs_up_every_leg(self, conf: Conferences) -> None:
        """When the call ends, joined and ringing legs are all hung up; nothing more."""
        join(conf, "damkar", 1)
        conf.handle(AddAgency(C, "dinkes"), 3.0)
        cmds = conf.handle(CallEnded(C), 4.0)
        assert telephony(cmds) == [
            CancelParty(leg(3)),
            CancelTimer(f"siaga-conf-ring-{C}-4"),
            CancelParty(leg(1)),
        ]
        assert conf.legs() == {}
        assert conf.busy_endpoints() == {}
        assert conf.handle(PartyGone(leg(1)), 4.1) == []

    def test_dispatcher_hangup_plays_left(self, conf: Conferences) -> None:
        """A dispatcher hanging up is journalled and the call hears the left tone."""
        join(conf, "damkar", 1)
        cmds = conf.handle(PartyGone(leg(1)), 5.0)
        assert telephony(cmds) == [tone(Tone.LEFT)]
        assert cmds[-1].detail["reason"] == "hung-up"  # type: ignore[union-attr]


class TestSupervisors:
    def test_listen_spies_on_the_caller_silently_and_is_audited(self, conf: Conferences) -> None:
        """A listening supervisor spies both directions of the caller, no tone, audit entries."""
        cmds = conf.handle(Supervise(C, "spv1", "PJSIP/spv1", SuperviseMode.LISTEN), 1.0)
        assert (
            RingParty(leg(1), C, "PJSIP/spv1", 30.0, "112 supervisi", "supervisor:spv1:sup:spv1")
            in cmds
        )
        cmds2 = conf.handle(PartyAnswered(leg(1)), 2.0)
        snoop = f"siaga-snoop-{C}-1"
        assert SnoopParty(C, leg(1), snoop, C, Direction.BOTH, Direction.NONE, "listen") in cmds2
        assert not any(isinstance(c, PlayTone) for c in cmds2)
        events = [c for c in cmds + cmds2 if isinstance(c, PublishCallEvent)]
        assert {e.stage for e in events} == {CallStage.SUPERVISOR}
        assert all(e.detail["audit"] is True for e in events)
        cmds3 = conf.handle(CallerLeft(C), 3.0)
        assert DropSnoop(snoop) in cmds3

    def test_barge_joins_the_bridge(self, conf: Conferences) -> None:
        """A barging supervisor joins the call bridge and talks."""
        conf.handle(Supervise(C, "spv1", "PJSIP/spv1", SuperviseMode.BARGE), 1.0)
        assert BridgeParty(C, leg(1), muted=False, role="barge") in conf.handle(
            PartyAnswered(leg(1)), 2.0
        )


class TestChecks:
    def test_requests_on_unknown_calls_and_agencies_are_refused(self, conf: Conferences) -> None:
        """check() names the problem and changes nothing."""
        with pytest.raises(RemoteProtocolError, match="not live"):
            conf.check(AddAgency("nope", "damkar"))
        with pytest.raises(RemoteProtocolError, match="no agency"):
            conf.check(AddAgency(C, "basarnas"))
        conf.handle(AddAgency(C, "damkar"), 1.0)
        with pytest.raises(RemoteProtocolError, match="already"):
            conf.check(AddAgency(C, "damkar"))
        with pytest.raises(RemoteProtocolError, match="not in the call"):
            conf.check(RemoveAgency(C, "dinkes"))
        assert len(conf.legs()) == 1

    def test_directory_rejects_bad_agencies(self) -> None:
        """Duplicate digits, unknown fallbacks and dial strings are refused where built."""
        with pytest.raises(ValueError, match="PJSIP"):
            Agency("x", "X", ("PJSIP/0811@trunk",))
        with pytest.raises(ValueError, match="digits"):
            AgencyDirectory((Agency("a", "A", ("PJSIP/a",), 1), Agency("b", "B", ("PJSIP/b",), 1)))
        with pytest.raises(ValueError, match="fallback"):
            AgencyDirectory((Agency("a", "A", ("PJSIP/a",), fallback="zz"),))

    def test_mass_incident_skips_agencies_already_in(self, conf: Conferences) -> None:
        """*0 after Damkar joined rings only Dinkes."""
        join(conf, "damkar", 1)
        cmds = conf.handle(AddMassIncident(C), 3.0)
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/disp-dinkes"]
