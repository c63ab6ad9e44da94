"""Sign-in throttling: per key, a window, a lock, pure time."""

from __future__ import annotations

from siaga_pbx.people._throttle import Limit, Throttle


def throttle() -> Throttle:
    return Throttle(Limit(max_failures=5, window_s=300, lock_s=300))


class TestThrottle:
    def test_five_failures_lock_for_five_minutes(self) -> None:
        """The fifth failure within the window locks the key for lock_s."""
        t = throttle()
        assert [t.failed("u:a", float(i)) for i in range(5)] == [False] * 4 + [True]
        assert t.retry_after("u:a", 4.0) == 300.0
        assert t.retry_after("u:a", 303.0) == 1.0
        assert t.retry_after("u:a", 304.0) == 0.0
        assert t.retry_after("u:b", 4.0) == 0.0  # other keys are untouched

    def test_failures_outside_the_window_do_not_count(self) -> None:
        """Failures spread wider than the window never lock."""
        t = throttle()
        assert not any(t.failed("u:a", i * 100.0) for i in range(20))

    def test_success_clears(self) -> None:
        """A success forgets the key's failures."""
        t = throttle()
        for i in range(4):
            t.failed("u:a", float(i))
        t.succeeded("u:a")
        assert not t.failed("u:a", 5.0)

    def test_prune_forgets_quiet_keys(self) -> None:
        """Keys with no recent failure and no lock are pruned."""
        t = throttle()
        t.failed("a", 0.0)
        for i in range(5):
            t.failed("b", float(i))
        t.prune(200.0)
        assert len(t) == 2  # a's failure is recent, b is locked until 304
        t.prune(310.0)
        assert len(t) == 0
