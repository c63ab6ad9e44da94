"""A handset that vanished mid-call (``HandsetLost``): a drop, never a lost caller."""

from __future__ import annotations

from collections.abc import Sequence

from siaga_pbx.core import (
    CallStage,
    CancelRing,
    CancelTimer,
    HandsetAnswered,
    HandsetHungUp,
    HandsetLost,
    HoldMode,
    PublishTakerState,
    ReleaseHandset,
    RingHandset,
    StartHold,
    StartTimer,
    TakerDeviceChanged,
    TakerStatus,
)

from ._support import Driver, arrived, centre, ev, offer, queue, taker


def rings(cmds: Sequence[object]) -> list[str]:
    return [c.taker_id for c in cmds if isinstance(c, RingHandset)]


def bridged(d: Driver, *takers: str) -> None:
    """c1 waits behind nobody and is answered by the first taker rung."""
    d.feed(arrived("c1"))
    d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
    assert [c["taker_id"] for c in d.connected()] == [takers[0]]


class TestHandsetLost:
    def test_a_lost_handset_in_a_call_is_a_drop_with_its_reason(self) -> None:
        """The dead channel is released, the caller requeued at the head and rung elsewhere."""
        d = Driver(centre([queue()], [taker("t1"), taker("t2")]))
        bridged(d, "t1")
        cmds = d.feed(HandsetLost(offer("c1", 1)), 20.0)
        assert cmds[:5] == [
            ReleaseHandset(offer("c1", 1)),
            ev(
                "c1",
                CallStage.TAKER_LEFT,
                20.0,
                taker_id="t1",
                reason="handset-lost",
                evidence="contact-unreachable",
                side="taker",
            ),
            ev("c1", CallStage.REQUEUED, 20.0, queue="main", reason="handset-lost", at_head=True),
            StartHold("c1", HoldMode.RINGBACK, "default"),
            PublishTakerState("t1", TakerStatus.AVAILABLE, 20.0),
        ]
        assert StartTimer("siaga-device-t1", 20.0 + 30.0) in cmds  # the device recheck
        assert rings(cmds) == ["t2"]
        assert d.connected() == []
        assert d.waiting()[0]["call_id"] == "c1"
        assert d.waiting()[0]["at_head"] is True

    def test_the_lost_taker_is_not_rung_again_until_its_handset_is_back(self) -> None:
        """Alone on duty, the lost taker is blocked; device state reachable unblocks it."""
        d = Driver(centre([queue()], [taker("t1")]))
        bridged(d, "t1")
        assert rings(d.feed(HandsetLost(offer("c1", 1)), 20.0)) == []
        assert d.waiting()[0]["state"] == "waiting"  # still waiting, never dropped
        cmds = d.feed(TakerDeviceChanged("t1", reachable=True, in_use=False), 25.0)
        assert CancelTimer("siaga-device-t1") in cmds
        assert rings(cmds) == ["t1"]

    def test_the_later_channel_destroyed_is_ignored(self) -> None:
        """After the core released the lost handset, its hang-up report changes nothing."""
        d = Driver(centre([queue()], [taker("t1"), taker("t2")]))
        bridged(d, "t1")
        d.feed(HandsetLost(offer("c1", 1)), 20.0)
        assert d.feed(HandsetHungUp(offer("c1", 1), cause=16), 20.1) == []
        assert d.feed(HandsetLost(offer("c1", 1)), 20.2) == []  # a second report too

    def test_a_handset_lost_while_ringing_is_an_unreachable_ring(self) -> None:
        """A ringing offer to a vanished phone fails as unreachable; the next taker is rung."""
        d = Driver(centre([queue()], [taker("t1"), taker("t2")]))
        d.feed(arrived("c1"))
        cmds = d.feed(HandsetLost(offer("c1", 1)), 3.0)
        assert cmds[0] == CancelRing(offer("c1", 1))
        assert (
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                3.0,
                taker_id="t1",
                attempt_id=offer("c1", 1),
                reason="unreachable",
            )
            in cmds
        )
        assert rings(cmds) == ["t2"]

    def test_unknown_handset_is_ignored(self) -> None:
        """A loss reported for an offer the core never made changes nothing."""
        d = Driver(centre([queue()], [taker("t1")]))
        assert d.feed(HandsetLost(offer("nobody", 1)), 1.0) == []
