"""Events about things already finished: the normal result of races."""

from __future__ import annotations

import pytest

from siaga_pbx.core import (
    CallerHungUp,
    Event,
    HandsetAnswered,
    HandsetFailed,
    HandsetFailure,
    HandsetHungUp,
    HandsetRinging,
    PromptFinished,
    ReleaseHandset,
    TakerDeviceChanged,
    TimerFired,
)

from ._support import Driver, arrived, offer, ring_timer

STALE: list[Event] = [
    CallerHungUp("nobody"),
    PromptFinished("nobody", "nobody-greeting"),
    PromptFinished("c1", "c1-reassurance-7"),
    HandsetRinging(offer("c1", 1)),
    HandsetFailed(offer("c1", 9), HandsetFailure.BUSY),
    HandsetHungUp(offer("c1", 9)),
    TimerFired("siaga-ring-siaga-offer-c1-9"),
    TimerFired("siaga-wrapup-t1"),
    TimerFired("not-ours"),
    TakerDeviceChanged("t9", reachable=False),
]


class TestStaleEvents:
    @pytest.mark.parametrize("event", STALE, ids=lambda e: type(e).__name__)
    def test_stale_event_is_ignored(self, event: Event) -> None:
        """An event about an unknown or finished thing changes nothing and asks nothing."""
        d = Driver()
        d.feed(arrived("c1"))
        before = d.core.snapshot(1.0)
        assert d.feed(event, 1.0) == []
        assert d.core.snapshot(1.0) == before

    def test_answer_for_an_unknown_attempt_releases_it(self) -> None:
        """A handset answering an offer we never made is hung up, not connected."""
        d = Driver()
        assert d.feed(HandsetAnswered("siaga-offer-ghost-1")) == [
            ReleaseHandset("siaga-offer-ghost-1")
        ]

    def test_timer_that_already_fired_is_not_acted_on_twice(self) -> None:
        """A ring timer delivered twice counts one miss only."""
        d = Driver()
        d.feed(arrived("c1"))
        assert d.feed(TimerFired(ring_timer("c1", 1)), 15.0) != []
        assert d.feed(TimerFired(ring_timer("c1", 1)), 15.0) == []
        assert d.takers()[0]["misses"] == 1

    def test_failure_after_timeout_is_ignored(self) -> None:
        """Asterisk's own no-answer after our ring timer changes nothing."""
        d = Driver()
        d.feed(arrived("c1"))
        d.feed(TimerFired(ring_timer("c1", 1)), 15.0)
        assert d.feed(HandsetFailed(offer("c1", 1), HandsetFailure.NO_ANSWER), 15.1) == []

    def test_repeated_arrival_is_ignored(self) -> None:
        """The same call arriving twice is one caller."""
        d = Driver()
        d.feed(arrived("c1"))
        assert d.feed(arrived("c1"), 1.0) == []
        assert len(d.waiting()) == 1
