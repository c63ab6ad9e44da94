"""Scenario tests of ``TakerHandedOver``: the taker leaves a call to a dispatcher."""

from __future__ import annotations

from siaga_pbx.core import (
    CallerHungUp,
    CallStage,
    HandsetAnswered,
    HandsetHungUp,
    PublishTakerState,
    ReleaseHandset,
    StartTimer,
    TakerHandedOver,
    TakerStatus,
)

from ._support import Driver, arrived, centre, ev, offer, queue, taker


def connected(d: Driver) -> str:
    d.feed(arrived("c1"), 0.0)
    d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
    return offer("c1", 1)


class TestHandover:
    def test_taker_is_released_and_the_caller_kept(self) -> None:
        """The handset is released, HANDED_OVER published, the taker free; no EndCall."""
        d = Driver()
        aid = connected(d)
        cmds = d.feed(TakerHandedOver("c1"), 10.0)
        assert cmds == [
            ReleaseHandset(aid),
            ev("c1", CallStage.HANDED_OVER, 10.0, taker_id="t1", attempt_id=aid, talk_s=8.0),
            PublishTakerState("t1", TakerStatus.AVAILABLE, 10.0),
        ]
        assert d.status("t1") == "available"
        assert d.core.known_calls() == set()

    def test_wrap_up_applies(self) -> None:
        """With wrap-up configured the taker goes to wrap-up as after any call."""
        d = Driver(centre([queue(wrapup_s=5.0)], [taker("t1")]))
        connected(d)
        cmds = d.feed(TakerHandedOver("c1"), 10.0)
        assert PublishTakerState("t1", TakerStatus.WRAP_UP, 10.0) in cmds
        assert any(isinstance(c, StartTimer) for c in cmds)

    def test_later_hangups_are_ignored(self) -> None:
        """The released handset's hangup and the caller's later hangup change nothing here."""
        d = Driver()
        aid = connected(d)
        d.feed(TakerHandedOver("c1"), 10.0)
        assert d.feed(HandsetHungUp(aid), 10.1) == []
        assert d.feed(CallerHungUp("c1"), 30.0) == []

    def test_stale_handover_is_ignored(self) -> None:
        """A handover for a call that is not connected (or unknown) does nothing."""
        d = Driver()
        assert d.feed(TakerHandedOver("nope"), 1.0) == []
        d.feed(arrived("c2"), 2.0)
        assert not any(isinstance(c, ReleaseHandset) for c in d.feed(TakerHandedOver("c2"), 3.0))
        assert "c2" in d.core.known_calls()
