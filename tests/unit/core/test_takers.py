"""The taker state machine: the table itself, and every status x event pair."""

from __future__ import annotations

import itertools

import pytest

from siaga_pbx.core import (
    CallerHungUp,
    Event,
    HandsetAnswered,
    HandsetFailed,
    HandsetFailure,
    HandsetHungUp,
    LocalProtocolError,
    ReleaseHandset,
    RemoteProtocolError,
    TakerDeviceChanged,
    TakerLoggedIn,
    TakerLoggedOut,
    TakerPaused,
    TakerStatus,
    TakerUnpaused,
    TimerFired,
)
from siaga_pbx.core._takers import TAKER_TRANSITIONS, Taker, TakerInput, next_status

from ._support import Driver, arrived, centre, offer, queue, ring_timer, taker

S = TakerStatus
I = TakerInput  # noqa: E741 - a table reads better with one-letter names

# The expected table, written out independently of the code: status -> the
# inputs it accepts and where they lead. Everything absent is illegal.
EXPECTED: dict[TakerStatus, dict[TakerInput, TakerStatus]] = {
    S.OFFLINE: {I.LOG_IN: S.AVAILABLE, I.LOG_OUT: S.OFFLINE},
    S.AVAILABLE: {
        I.LOG_IN: S.AVAILABLE,
        I.LOG_OUT: S.OFFLINE,
        I.PAUSE: S.PAUSED,
        I.UNPAUSE: S.AVAILABLE,
        I.OFFER: S.RINGING,
    },
    S.RINGING: {
        I.LOG_IN: S.RINGING,
        I.LOG_OUT: S.OFFLINE,
        I.PAUSE: S.PAUSED,
        I.UNPAUSE: S.RINGING,
        I.ANSWER: S.ON_CALL,
        I.RING_MISSED: S.AVAILABLE,
        I.RING_FAILED: S.AVAILABLE,
        I.RING_CANCELLED: S.AVAILABLE,
    },
    S.ON_CALL: {
        I.LOG_IN: S.ON_CALL,
        I.LOG_OUT: S.ON_CALL,
        I.PAUSE: S.ON_CALL,
        I.UNPAUSE: S.ON_CALL,
        I.CALL_ENDED: S.WRAP_UP,
        I.CONNECT_FAILED: S.AVAILABLE,
    },
    S.WRAP_UP: {
        I.LOG_IN: S.WRAP_UP,
        I.LOG_OUT: S.OFFLINE,
        I.PAUSE: S.PAUSED,
        I.UNPAUSE: S.WRAP_UP,
        I.WRAP_UP_DONE: S.AVAILABLE,
    },
    S.PAUSED: {I.LOG_IN: S.PAUSED, I.LOG_OUT: S.OFFLINE, I.PAUSE: S.PAUSED, I.UNPAUSE: S.AVAILABLE},
}


class TestTransitionTable:
    @pytest.mark.parametrize(("status", "inp"), list(itertools.product(S, I)))
    def test_every_pair_is_handled_or_rejected_clearly(
        self, status: TakerStatus, inp: TakerInput
    ) -> None:
        """Each (status, input) pair leads where expected, or raises naming both."""
        expected = EXPECTED[status].get(inp)
        if expected is not None:
            assert next_status(status, inp) is expected
        else:
            with pytest.raises(LocalProtocolError) as err:
                next_status(status, inp)
            assert repr(status.value) in str(err.value)
            assert repr(inp.value) in str(err.value)

    def test_table_has_no_entries_beyond_the_expected_ones(self) -> None:
        """The code's table holds exactly the expected pairs, no more."""
        expected = {(s, i) for s, row in EXPECTED.items() for i in row}
        assert set(TAKER_TRANSITIONS) == expected

    def test_pause_reason_is_kept_only_while_paused(self) -> None:
        """A pause records its reason; leaving PAUSED clears it."""
        t = Taker(taker("t1"), status=S.AVAILABLE)
        t.apply(I.PAUSE, 1.0, "lunch")
        assert (t.status, t.reason, t.since) == (S.PAUSED, "lunch", 1.0)
        t.apply(I.PAUSE, 2.0, "training")
        assert (t.reason, t.since) == ("training", 1.0)
        t.apply(I.UNPAUSE, 3.0)
        assert (t.status, t.reason, t.since) == (S.AVAILABLE, "", 3.0)


def _driver_in(status: TakerStatus) -> Driver:
    """A centre with one taker t1 brought into ``status`` by real events."""
    d = Driver(centre([queue(wrapup_s=30.0)], [taker("t1", logged_in=status is not S.OFFLINE)]))
    if status in (S.RINGING, S.ON_CALL, S.WRAP_UP):
        d.feed(arrived("c1"), 1.0)
    if status in (S.ON_CALL, S.WRAP_UP):
        d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
    if status is S.WRAP_UP:
        d.feed(CallerHungUp("c1"), 3.0)
    if status is S.PAUSED:
        d.feed(TakerPaused("t1", "lunch"), 1.0)
    assert d.status("t1") == status.value
    return d


REJECT = "reject"
EVENTS: dict[str, Event] = {
    "logged_in": TakerLoggedIn("t1"),
    "logged_out": TakerLoggedOut("t1"),
    "paused": TakerPaused("t1", "break"),
    "unpaused": TakerUnpaused("t1"),
    "device_unreachable": TakerDeviceChanged("t1", reachable=False),
    "answered": HandsetAnswered(offer("c1", 1)),
    "failed_no_answer": HandsetFailed(offer("c1", 1), HandsetFailure.NO_ANSWER),
    "handset_hung_up": HandsetHungUp(offer("c1", 1)),
    "ring_timer": TimerFired(ring_timer("c1", 1)),
    "wrapup_timer": TimerFired("siaga-wrapup-t1"),
}
# status -> event -> new status (REJECT: RemoteProtocolError, nothing changes)
BY_EVENT: dict[TakerStatus, dict[str, str]] = {
    S.OFFLINE: {"logged_in": "available", "paused": REJECT, "unpaused": REJECT},
    S.AVAILABLE: {"logged_out": "offline", "paused": "paused"},
    S.RINGING: {
        "logged_out": "offline",
        "paused": "paused",
        "answered": "on_call",
        "failed_no_answer": "available",
        "handset_hung_up": "available",
        "ring_timer": "available",
    },
    S.ON_CALL: {"handset_hung_up": "wrap_up"},
    S.WRAP_UP: {"logged_out": "offline", "paused": "paused", "wrapup_timer": "available"},
    S.PAUSED: {"logged_out": "offline", "unpaused": "available"},
}


class TestStatusByEvent:
    @pytest.mark.parametrize(("status", "name"), list(itertools.product(S, EVENTS)))
    def test_every_status_and_event(self, status: TakerStatus, name: str) -> None:
        """Each event moves the taker as the table says, leaves them, or is refused."""
        d = _driver_in(status)
        expected = BY_EVENT[status].get(name, status.value)
        if expected == REJECT:
            before = d.core.snapshot(d.now)
            with pytest.raises(RemoteProtocolError) as err:
                d.feed(EVENTS[name], 10.0)
            assert status.value in str(err.value)
            assert d.core.snapshot(d.now) == before
            return
        cmds = d.feed(EVENTS[name], 10.0)
        assert d.status("t1") == expected
        if name == "answered" and status is not S.RINGING and status is not S.ON_CALL:
            assert cmds == [ReleaseHandset(offer("c1", 1))]  # stale offer: hang it up

    def test_unknown_taker_request_is_refused(self) -> None:
        """A request naming a taker who is not configured is refused."""
        d = Driver()
        with pytest.raises(RemoteProtocolError, match="not configured"):
            d.feed(TakerPaused("t9"))

    def test_log_out_during_a_call_applies_when_it_ends(self) -> None:
        """A log-out asked for during a call takes effect when the call ends."""
        d = _driver_in(S.ON_CALL)
        assert d.feed(TakerLoggedOut("t1"), 5.0) == []
        assert d.status("t1") == "on_call"
        d.feed(CallerHungUp("c1"), 9.0)
        assert d.status("t1") == "offline"

    def test_pause_during_a_call_can_be_withdrawn(self) -> None:
        """Unpausing during the call cancels a pause asked for earlier in it."""
        d = _driver_in(S.ON_CALL)
        d.feed(TakerPaused("t1", "lunch"), 5.0)
        d.feed(TakerUnpaused("t1"), 6.0)
        d.feed(CallerHungUp("c1"), 9.0)
        assert d.status("t1") == "wrap_up"

    def test_pause_during_a_call_applies_with_its_reason(self) -> None:
        """A pause asked for during a call starts, with its reason, when the call ends."""
        d = _driver_in(S.ON_CALL)
        d.feed(TakerPaused("t1", "lunch"), 5.0)
        d.feed(CallerHungUp("c1"), 9.0)
        assert (d.takers()[0]["status"], d.takers()[0]["reason"]) == ("paused", "lunch")

    def test_unreachable_and_in_use_takers_are_not_offered(self) -> None:
        """Device state decides: an unreachable or busy handset is skipped."""
        d = Driver(centre([queue()], [taker("t1")]))
        d.feed(TakerDeviceChanged("t1", reachable=False))
        d.feed(arrived("c1"), 1.0)
        assert d.waiting()[0]["state"] == "waiting"
        d.feed(TakerDeviceChanged("t1", reachable=True, in_use=True), 2.0)
        assert d.waiting()[0]["state"] == "waiting"
        d.feed(TakerDeviceChanged("t1", reachable=True), 3.0)
        assert d.waiting()[0]["state"] == "ringing"
