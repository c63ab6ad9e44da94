"""Pending callbacks in the core: added on abandon, resolved, bounded, restored."""

from __future__ import annotations

import pytest

from siaga_pbx.core import (
    AddCallback,
    CallbackEntry,
    CallbackResolution,
    CallbackResolved,
    CallbacksRestored,
    CallerHungUp,
    CentreConfig,
    Distributor,
    ResolveCallback,
)

from ._support import Driver, arrived, centre, taker

CALLED_BACK = CallbackResolution.CALLED_BACK


def entry(call_id: str, abandoned_at: float, number: str = "0811000001") -> CallbackEntry:
    return CallbackEntry(call_id, number, abandoned_at - 4.0, abandoned_at, "main", "waiting")


def pending(d: Driver) -> list[str]:
    return [e["call_id"] for e in d.core.snapshot(d.now)["callbacks"]]


def abandon(d: Driver, call_id: str, at: float) -> list[object]:
    d.feed(arrived(call_id), at - 4.0)
    return list(d.feed(CallerHungUp(call_id), at))


def nobody_on_duty() -> CentreConfig:
    """Callers wait (nobody is rung), so an abandon is a plain waiting abandon."""
    return centre(takers=[taker("t1", logged_in=False)])


def no_takers() -> Driver:
    return Driver(nobody_on_duty())


class TestResolve:
    def test_resolving_a_pending_callback_publishes_it_and_removes_it(self) -> None:
        """CallbackResolved removes the callback from the live state and asks
        exactly for the record to be resolved: how, by whom, when, with the note."""
        d = no_takers()
        abandon(d, "c1", 10.0)
        assert pending(d) == ["c1"]
        cmds = d.feed(CallbackResolved("c1", CALLED_BACK, "taker:ab12", "spoke, all fine"), 30.0)
        assert cmds == [ResolveCallback("c1", CALLED_BACK, "taker:ab12", 30.0, "spoke, all fine")]
        assert pending(d) == []
        assert not d.core.holds_callback("c1")

    def test_resolving_a_callback_not_in_memory_still_reaches_the_record(self) -> None:
        """A callback the core does not hold (evicted, or from before a restart
        not yet restored) is still published, so the record can resolve it."""
        d = no_takers()
        abandon(d, "c1", 10.0)
        cmds = d.feed(CallbackResolved("gone", CallbackResolution.NOT_NEEDED, "admin:cd34"), 20.0)
        assert cmds == [ResolveCallback("gone", CallbackResolution.NOT_NEEDED, "admin:cd34", 20.0)]
        assert pending(d) == ["c1"]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"by": ""}, "by must be"),
            ({"by": "x\n"}, "by must be"),
            ({"note": "n" * 501}, "note"),
            ({"resolution": "called_back"}, "resolution must be"),
        ],
    )
    def test_a_malformed_resolution_is_refused_where_it_is_built(
        self, kwargs: dict[str, object], message: str
    ) -> None:
        """CallbackResolved checks its own fields (who, note, a known resolution)."""
        fields: dict[str, object] = {"call_id": "c1", "resolution": CALLED_BACK, "by": "admin:x"}
        with pytest.raises(ValueError, match=message):
            CallbackResolved(**(fields | kwargs))  # type: ignore[arg-type]


class TestBound:
    def test_memory_holds_the_newest_callbacks_and_evicts_the_oldest_silently(self) -> None:
        """Past max_callbacks the oldest callback leaves memory with no command of
        its own (the record keeps it): every abandon asks only for its own callback."""
        d = no_takers()
        d.core = Distributor(nobody_on_duty(), max_callbacks=3)
        for n in range(1, 6):
            cmds = abandon(d, f"c{n}", 10.0 * n)
            assert [c for c in cmds if isinstance(c, AddCallback)] == [
                AddCallback(entry(f"c{n}", 10.0 * n))
            ]
            assert not any(isinstance(c, ResolveCallback) for c in cmds)
        assert pending(d) == ["c3", "c4", "c5"]
        assert "callbacks=3" in repr(d.core)

    def test_a_bound_below_one_is_refused(self) -> None:
        """A core that could hold no callback at all is a configuration error."""
        with pytest.raises(ValueError, match="max_callbacks"):
            Distributor(centre(), max_callbacks=0)


class TestRestore:
    def test_restored_callbacks_merge_in_order_of_abandonment(self) -> None:
        """Restored entries join those abandoned since the start, oldest first,
        and one already held is not replaced; the restore asks for nothing."""
        d = no_takers()
        abandon(d, "new", 100.0)
        restored = (entry("old2", 50.0), entry("old1", 40.0), entry("new", 1.0, "other"))
        assert d.feed(CallbacksRestored(restored), 101.0) == []
        assert pending(d) == ["old1", "old2", "new"]
        held = d.core.snapshot(101.0)["callbacks"][-1]
        assert (held["number"], held["abandoned_at"]) == ("0811000001", 100.0)

    def test_restore_past_the_bound_keeps_the_newest(self) -> None:
        """A restore larger than the bound keeps the most recently abandoned ones."""
        d = no_takers()
        d.core = Distributor(nobody_on_duty(), max_callbacks=2)
        d.feed(CallbacksRestored(tuple(entry(f"c{n}", float(n)) for n in (3, 1, 4, 2))), 9.0)
        assert pending(d) == ["c3", "c4"]

    def test_a_stale_restore_does_not_bring_back_a_resolved_callback(self) -> None:
        """A restore read from the record before a resolution reached it cannot
        make the resolved callback pending again."""
        d = no_takers()
        d.feed(CallbacksRestored((entry("c1", 5.0), entry("c2", 6.0))), 10.0)
        d.feed(CallbackResolved("c1", CALLED_BACK, "taker:ab12"), 11.0)
        d.feed(CallbacksRestored((entry("c1", 5.0), entry("c2", 6.0))), 12.0)
        assert pending(d) == ["c2"]

    def test_a_restore_with_something_else_than_entries_is_refused(self) -> None:
        """CallbacksRestored checks that it carries callback entries in a tuple."""
        with pytest.raises(ValueError, match="CallbackEntry"):
            CallbacksRestored(("c1",))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="tuple"):
            CallbacksRestored([entry("c1", 1.0)])  # type: ignore[arg-type]
