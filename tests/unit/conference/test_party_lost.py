"""A dispatcher's phone that vanished mid-call (``PartyLost``): a failed leg, the call goes on."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from siaga_pbx.conference import (
    AddAgency,
    Agency,
    AgencyDirectory,
    CallConnected,
    CancelParty,
    Conferences,
    HandOver,
    PartyAnswered,
    PartyGone,
    PartyLost,
    PlayTone,
    ReturnCall,
    RingParty,
    Tone,
)
from siaga_pbx.core import CancelTimer, PublishCallEvent

C = "1700000000.1"
TAKER = f"siaga-offer-{C}-1"


def leg(n: int) -> str:
    return f"siaga-disp-{C}-{n}"


@pytest.fixture
def conf() -> Conferences:
    core = Conferences(
        AgencyDirectory(
            (
                Agency("damkar", "Damkar", ("PJSIP/disp-damkar",), 1, fallback="polisi"),
                Agency("polisi", "Polisi", ("PJSIP/disp-polisi",), 3),
            )
        )
    )
    core.handle(CallConnected(C, TAKER, "taker1"), 0.0)
    return core


def entries(cmds: Sequence[object]) -> list[tuple[str, dict[str, object]]]:
    return [(c.stage.value, dict(c.detail)) for c in cmds if isinstance(c, PublishCallEvent)]


class TestPartyLost:
    def test_a_joined_dispatcher_whose_phone_vanished_leaves_as_a_failed_leg(
        self, conf: Conferences
    ) -> None:
        """The dead leg is hung up, the call hears the left tone, the timeline says why."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        conf.handle(PartyAnswered(leg(1)), 2.0)
        cmds = conf.handle(PartyLost(leg(1)), 12.0)
        assert cmds[0] == CancelParty(leg(1))
        assert any(isinstance(c, PlayTone) and c.tone is Tone.LEFT for c in cmds)
        [(stage, detail)] = entries(cmds)
        assert stage == "dispatcher_left"
        assert (detail["agency"], detail["reason"], detail["failed"]) == (
            "damkar",
            "handset-lost",
            True,
        )
        assert detail["in_call_s"] == 10.0
        assert conf.snapshot(C)["parties"] == []  # type: ignore[index]
        assert conf.handle(PartyGone(leg(1), cause=16), 12.1) == []  # its hang-up: nothing more

    def test_a_ringing_dispatcher_whose_phone_vanished_is_a_failed_ring(
        self, conf: Conferences
    ) -> None:
        """The ringing leg is cancelled, fails as handset-lost, and the fallback is rung."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        cmds = conf.handle(PartyLost(leg(1)), 2.0)
        assert cmds[0] == CancelParty(leg(1))
        assert CancelTimer(f"siaga-conf-ring-{C}-2") in cmds
        assert entries(cmds)[0][1]["reason"] == "handset-lost"
        assert [c.endpoint for c in cmds if isinstance(c, RingParty)] == ["PJSIP/disp-polisi"]

    def test_after_a_handover_losing_the_last_talker_returns_the_caller(
        self, conf: Conferences
    ) -> None:
        """A handed-over caller whose only dispatcher vanished goes back to a call taker."""
        conf.handle(AddAgency(C, "damkar"), 1.0)
        conf.handle(PartyAnswered(leg(1)), 2.0)
        conf.handle(HandOver(C), 3.0)
        cmds = conf.handle(PartyLost(leg(1)), 9.0)
        assert ReturnCall(C, offers_made=1) in cmds
        assert [s for s, _ in entries(cmds)] == ["dispatcher_left", "requeued"]

    def test_an_unknown_leg_is_ignored(self, conf: Conferences) -> None:
        """A loss reported for a leg this core does not hold changes nothing."""
        assert conf.handle(PartyLost(leg(7)), 1.0) == []
