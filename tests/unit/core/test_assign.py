"""The pure assignment step and the queue strategies."""

from __future__ import annotations

import random

from siaga_pbx.core import (
    CallerHungUp,
    HandsetAnswered,
    QueueConfig,
    RingHandset,
    Strategy,
    TakerStatus,
)
from siaga_pbx.core._assign import Offer, assign_offers
from siaga_pbx.core._callers import Caller
from siaga_pbx.core._takers import Taker

from ._support import Driver, arrived, centre, offer, queue, taker, who

QUEUES = {"main": QueueConfig("main", strategy=Strategy.LINEAR)}


def _taker(tid: str, status: TakerStatus = TakerStatus.AVAILABLE) -> Taker:
    return Taker(taker(tid), status=status)


def _caller(call_id: str, seq: int, priority: int = 5, band: int = 1) -> Caller:
    return Caller(call_id, who(), "main", 0.0, 0.0, priority, seq, band=band)


def _assign(callers: list[Caller], takers: list[Taker], now: float = 0.0) -> list[Offer]:
    return assign_offers(
        callers, takers, queues=QUEUES, rr_memory={}, rng=random.Random(0), now=now
    )


class TestAssignOffers:
    def test_callers_are_served_by_band_priority_then_arrival(self) -> None:
        """Free takers go to callers in (band, priority, arrival) order."""
        callers = [
            _caller("late", 3),
            _caller("early", 1),
            _caller("urgent", 9, priority=1),
            _caller("requeued", 10, band=0),
        ]
        offers = _assign(callers, [_taker("t1"), _taker("t2"), _taker("t3")])
        assert [o.call_id for o in offers] == ["requeued", "urgent", "early"]

    def test_unavailable_takers_are_never_chosen(self) -> None:
        """Paused, offline, ringing, blocked or unreachable takers get no offer."""
        takers = [
            _taker("p", TakerStatus.PAUSED),
            _taker("o", TakerStatus.OFFLINE),
            _taker("r", TakerStatus.RINGING),
            _taker("b"),
            _taker("u"),
            _taker("ok"),
        ]
        takers[3].blocked = True
        takers[4].reachable = False
        assert _assign([_caller("c1", 1), _caller("c2", 2)], takers) == [
            Offer("c1", ("ok",), reset_tried=False)
        ]

    def test_caller_in_retry_delay_is_skipped_for_the_next(self) -> None:
        """A caller in its retry delay lets the next caller take the free taker."""
        first = _caller("c1", 1)
        first.not_before = 5.0
        assert _assign([first, _caller("c2", 2)], [_taker("t1")], now=4.0)[0].call_id == "c2"

    def test_tried_takers_are_skipped_until_only_they_are_free(self) -> None:
        """A taker who missed the caller is skipped, unless no one else is free."""
        c = _caller("c1", 1)
        c.tried = {"t1"}
        assert _assign([c], [_taker("t1"), _taker("t2")]) == [Offer("c1", ("t2",), False)]
        assert _assign([c], [_taker("t1")]) == [Offer("c1", ("t1",), reset_tried=True)]

    def test_nothing_changes_while_deciding(self) -> None:
        """Assignment is pure: callers and takers are left untouched."""
        c, t = _caller("c1", 1), _taker("t1")
        _assign([c], [t])
        assert (c.offers, c.tried, t.status) == ({}, set(), TakerStatus.AVAILABLE)


def _served_order(strategy: Strategy, calls: int, seed: int = 0) -> list[str]:
    """Which taker answers each of ``calls`` consecutive callers (each hangs up)."""
    d = Driver(
        centre([queue(strategy=strategy)], [taker("t1"), taker("t2"), taker("t3")]), seed=seed
    )
    order = []
    for n in range(calls):
        cmds = d.feed(arrived(f"c{n}", number=f"08{n:08d}"), float(n * 100))
        tid = next(c.taker_id for c in cmds if isinstance(c, RingHandset))
        order.append(tid)
        d.feed(HandsetAnswered(offer(f"c{n}", 1)), n * 100 + 1.0)
        d.feed(CallerHungUp(f"c{n}"), n * 100 + 10.0 + n)
    return order


class TestStrategies:
    def test_linear_always_starts_with_the_first_taker(self) -> None:
        """Linear rings takers in configuration order, always from the first."""
        assert _served_order(Strategy.LINEAR, 4) == ["t1", "t1", "t1", "t1"]

    def test_rrmemory_continues_after_the_last_taker_rung(self) -> None:
        """Round robin with memory moves on to the taker after the last one rung."""
        assert _served_order(Strategy.RRMEMORY, 4) == ["t1", "t2", "t3", "t1"]

    def test_leastrecent_rings_whoever_finished_a_call_longest_ago(self) -> None:
        """Least recent prefers the taker whose last call ended longest ago."""
        assert _served_order(Strategy.LEASTRECENT, 4) == ["t1", "t2", "t3", "t1"]

    def test_fewestcalls_rings_whoever_answered_fewest(self) -> None:
        """Fewest calls prefers the taker who has answered the fewest calls."""
        d = Driver(centre([queue(strategy=Strategy.FEWESTCALLS)], [taker("t1"), taker("t2")]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 1.0)
        d.feed(CallerHungUp("c1"), 2.0)
        cmds = d.feed(arrived("c2", number="0811000002"), 3.0)
        assert [c.taker_id for c in cmds if isinstance(c, RingHandset)] == ["t2"]

    def test_random_is_reproducible_from_the_seed_and_spreads(self) -> None:
        """Random picks depend only on the seed and reach more than one taker."""
        first = _served_order(Strategy.RANDOM, 12, seed=7)
        assert first == _served_order(Strategy.RANDOM, 12, seed=7)
        assert len(set(first)) > 1
