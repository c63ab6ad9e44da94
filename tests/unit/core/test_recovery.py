"""Rebuilding state after a restart, and the read-only views."""

from __future__ import annotations

import json

import pytest

from siaga_pbx.core import (
    CallbackEntry,
    CallbackResolution,
    CallbackResolved,
    CallerHungUp,
    ConnectCall,
    Distributor,
    HandsetAnswered,
    HandsetHungUp,
    HoldMode,
    LocalProtocolError,
    Overflow,
    PublishTakerState,
    ReleaseHandset,
    RingHandset,
    StartHold,
    StartTimer,
    TakerStatus,
)

from ._support import Driver, arrived, centre, offer, queue, taker, who


class TestAdoption:
    def test_restart_rebuilds_calls_then_waiting_callers_in_order(self) -> None:
        """Adopted connected calls keep their taker; adopted callers are offered by arrival."""
        d = Driver(
            centre(
                [queue(overflow=Overflow(after_s=60.0, queue="backup")), queue("backup")],
                [taker("t1"), taker("t2")],
            )
        )
        core = d.core
        assert core.adopt_connected_call(
            "c1",
            caller=who(),
            queue="main",
            arrived_at=-50.0,
            attempt_id=offer("c1", 2),
            taker_id="t1",
            now=0.0,
        ) == [PublishTakerState("t1", TakerStatus.ON_CALL, 0.0)]
        assert core.adopt_waiting_caller(
            "c2",
            caller=who("0811000002"),
            queue="main",
            arrived_at=-30.0,
            now=0.0,
            offers_made=3,
        ) == [
            StartHold("c2", HoldMode.RINGBACK, "default"),
            StartTimer("siaga-overflow-c2", 30.0),
        ]
        core.adopt_waiting_caller(
            "c3", caller=who("0811000003"), queue="main", arrived_at=-10.0, now=0.0
        )
        cmds = core.resume(0.0)
        assert cmds[:2] == [
            PublishTakerState("t1", TakerStatus.ON_CALL, 0.0),
            PublishTakerState("t2", TakerStatus.AVAILABLE, 0.0),
        ]
        rings = [c for c in cmds if isinstance(c, RingHandset)]
        assert [(r.call_id, r.attempt_id, r.taker_id) for r in rings] == [
            ("c2", offer("c2", 4), "t2")
        ]
        # the adopted call ends normally
        assert d.feed(CallerHungUp("c1"), 5.0)[0] == ReleaseHandset(offer("c1", 2))
        assert d.status("t1") == "ringing"  # at once offered the waiting c3

    def test_adopted_call_of_an_unconfigured_taker_survives(self) -> None:
        """A call bridged to a taker no longer configured is kept; the taker leaves after."""
        d = Driver(centre([queue()], [taker("t1")]))
        d.core.adopt_connected_call(
            "c1",
            caller=who(),
            queue="main",
            arrived_at=0.0,
            attempt_id=offer("c1", 1),
            taker_id="gone",
            now=1.0,
        )
        assert [c["taker_id"] for c in d.connected()] == ["gone"]
        cmds = d.feed(HandsetHungUp(offer("c1", 1), cause=34), 2.0)
        assert d.status("gone") == "absent"
        assert any(isinstance(c, RingHandset) and c.taker_id == "t1" for c in cmds)

    def test_adopting_twice_is_our_error(self) -> None:
        """Adopting the same caller twice is a misuse by our own shell."""
        core = Distributor(centre())
        core.adopt_waiting_caller("c1", caller=who(), queue="main", arrived_at=0.0, now=1.0)
        with pytest.raises(LocalProtocolError, match="already known"):
            core.adopt_waiting_caller("c1", caller=who(), queue="main", arrived_at=0.0, now=1.0)

    def test_adopted_callbacks_are_pending_until_resolved(self) -> None:
        """Restored callbacks show in the snapshot until CallbackResolved."""
        d = Driver()
        d.core.adopt_callback(CallbackEntry("c0", "0811", 1.0, 5.0, "main", "waiting"))
        assert [e["call_id"] for e in d.core.snapshot(9.0)["callbacks"]] == ["c0"]
        d.feed(CallbackResolved("c0", CallbackResolution.CALLED_BACK, "admin:x"), 9.0)
        assert d.core.snapshot(9.0)["callbacks"] == []


class TestViews:
    def test_snapshot_is_json_and_shows_callers_and_takers(self) -> None:
        """The snapshot is JSON-safe and lists waiting callers with their wait."""
        d = Driver(centre([queue()], [taker("t1"), taker("t2", logged_in=False)]))
        d.feed(arrived("c1"), 10.0)
        d.feed(arrived("c2", number="0811000002"), 12.0)
        d.now = 20.0
        snap = json.loads(json.dumps(d.core.snapshot(20.0)))
        assert snap["queues"][0]["waiting"] == [
            {
                "call_id": "c1",
                "number": "0811000001",
                "priority": 5,
                "wait_s": 10.0,
                "state": "ringing",
                "position": 1,
                "at_head": False,
            },
            {
                "call_id": "c2",
                "number": "0811000002",
                "priority": 5,
                "wait_s": 8.0,
                "state": "waiting",
                "position": 2,
                "at_head": False,
            },
        ]
        assert [(t["id"], t["status"], t["since"]) for t in snap["takers"]] == [
            ("t1", "ringing", 10.0),
            ("t2", "offline", None),
        ]

    def test_repr_shows_the_state(self) -> None:
        """repr counts callers by state and takers by status, for log lines."""
        d = Driver()
        d.feed(arrived("c1"))
        assert repr(d.core) == (
            "<Distributor waiting=0 ringing=1 connected=0 takers=available:1,ringing:1 callbacks=0>"
        )

    def test_connect_is_issued_once_per_answer(self) -> None:
        """A single answered offer produces exactly one ConnectCall."""
        d = Driver()
        d.feed(arrived("c1"))
        cmds = d.feed(HandsetAnswered(offer("c1", 1)), 1.0)
        assert [type(c) for c in cmds].count(ConnectCall) == 1
