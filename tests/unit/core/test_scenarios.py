"""Scenario tests: key flows of a 112 centre, asserting the exact commands."""

from __future__ import annotations

from siaga_pbx.core import (
    MISSED_CALLS,
    AddCallback,
    AnswerCaller,
    CallbackEntry,
    CallerArrived,
    CallerHungUp,
    CallStage,
    CancelRing,
    CancelTimer,
    CommandFailed,
    ConfigChanged,
    ConnectCall,
    EndCall,
    HandsetAnswered,
    HandsetFailed,
    HandsetFailure,
    HandsetHungUp,
    HoldMode,
    Overflow,
    PlayPrompt,
    PriorityRules,
    PromptFinished,
    PublishCallEvent,
    PublishTakerState,
    RedirectCaller,
    ReleaseHandset,
    RingHandset,
    StartHold,
    StartTimer,
    StopHold,
    StopPrompt,
    Strategy,
    TakerDeviceChanged,
    TakerLoggedIn,
    TakerLoggedOut,
    TakerPaused,
    TakerStatus,
    TakerUnpaused,
    TimerFired,
)

from ._support import Driver, arrived, centre, ev, offer, queue, ring_timer, taker, who

A = TakerStatus.AVAILABLE
R = TakerStatus.RINGING
ON = TakerStatus.ON_CALL
PA = TakerStatus.PAUSED


def ring(call_id: str, n: int, tid: str, at: float, number: str = "0811000001") -> list[object]:
    """The four commands of one offer."""
    aid = offer(call_id, n)
    timeout = 15.0
    return [
        RingHandset(aid, call_id, tid, f"PJSIP/{tid}", timeout, who(number)),
        StartTimer(ring_timer(call_id, n), at + timeout),
        ev(call_id, CallStage.OFFERED, at, taker_id=tid, attempt_id=aid, queue="main"),
        PublishTakerState(tid, R, at),
    ]


def arrival(call_id: str, at: float = 0.0, prio: int = 5, q: str = "main") -> list[object]:
    """The commands every arrival starts with (no reassurance configured)."""
    return [
        AnswerCaller(call_id),
        ev(
            call_id,
            CallStage.ARRIVED,
            at,
            queue=q,
            number="0811000001",
            priority=prio,
            repeat=False,
            trunk="",
        ),
        PlayPrompt(call_id, f"{call_id}-greeting", "greeting"),
        ev(call_id, CallStage.QUEUED, at, queue=q, priority=prio),
    ]


def answer(call_id: str, n: int, tid: str, at: float, arrived_at: float = 0.0) -> list[object]:
    aid = offer(call_id, n)
    return [
        ConnectCall(call_id, aid, tid),
        ev(
            call_id,
            CallStage.ANSWERED,
            at,
            taker_id=tid,
            attempt_id=aid,
            queue="main",
            wait_s=at - arrived_at,
        ),
        PublishTakerState(tid, ON, at),
    ]


class TestArrival:
    def test_arrival_answers_greets_queues_and_rings_at_once(self) -> None:
        """A caller is answered, greeted and queued, and a taker rings at once."""
        d = Driver()
        assert d.feed(arrived("c1")) == [*arrival("c1"), *ring("c1", 1, "t1", 0.0)]

    def test_recovered_arrival_is_not_journalled_again(self) -> None:
        """A caller a restarted service finds unanswered is served like an arrival,
        but publishes no ARRIVED: the incident store opens it at most once."""
        d = Driver()
        recovered = CallerArrived("c1", who("0811000001"), "main", recovered=True)
        expected = [c for c in arrival("c1") if getattr(c, "stage", None) != CallStage.ARRIVED]
        assert d.feed(recovered) == [*expected, *ring("c1", 1, "t1", 0.0)]

    def test_arrival_with_reassurance_starts_its_timer(self) -> None:
        """With reassurance configured, its timer starts on arrival."""
        d = Driver(centre([queue(reassurance_every_s=20.0)], [taker("t1", logged_in=False)]))
        assert d.feed(arrived("c1")) == [
            *arrival("c1"),
            StartTimer("siaga-reassure-c1", 20.0),
        ]

    def test_greeting_end_puts_the_caller_on_hold(self) -> None:
        """After the greeting the waiting caller is marked greeted and hears hold."""
        d = Driver(centre([queue(hold=HoldMode.MUSIC, music_class="calm")]))
        d.feed(arrived("c1"))
        assert d.feed(PromptFinished("c1", "c1-greeting"), 4.0) == [
            ev("c1", CallStage.GREETED, 4.0, queue="main"),
            StartHold("c1", HoldMode.MUSIC, "calm"),
        ]

    def test_failed_greeting_goes_straight_to_hold(self) -> None:
        """A greeting that cannot be played is skipped: the caller hears hold."""
        d = Driver()
        cmds = d.feed(arrived("c1"))
        play = next(c for c in cmds if isinstance(c, PlayPrompt))
        assert d.feed(CommandFailed(play, "no such sound"), 0.1) == [
            StartHold("c1", HoldMode.RINGBACK, "default"),
        ]

    def test_reassurance_interrupts_hold_then_resumes_it(self) -> None:
        """Reassurance and position prompts interrupt hold, which resumes after."""
        d = Driver(
            centre(
                [queue(reassurance_every_s=30.0, announce_position=True)],
                [taker("t1", logged_in=False)],
            )
        )
        d.feed(arrived("c1"))
        d.feed(PromptFinished("c1", "c1-greeting"), 5.0)
        assert d.feed(TimerFired("siaga-reassure-c1"), 30.0) == [
            StopHold("c1", HoldMode.RINGBACK),
            PlayPrompt("c1", "c1-reassurance-2", "reassurance"),
            StartTimer("siaga-reassure-c1", 60.0),
        ]
        assert d.feed(PromptFinished("c1", "c1-reassurance-2"), 33.0) == [
            PlayPrompt("c1", "c1-position1-3", "position:1"),
        ]
        assert d.feed(PromptFinished("c1", "c1-position1-3"), 35.0) == [
            StartHold("c1", HoldMode.RINGBACK, "default"),
        ]


class TestAnswer:
    def test_answer_stops_the_greeting_and_connects(self) -> None:
        """An answer during the greeting stops it and bridges the call."""
        d = Driver()
        d.feed(arrived("c1"))
        assert d.feed(HandsetAnswered(offer("c1", 1)), 3.0) == [
            CancelTimer(ring_timer("c1", 1)),
            StopPrompt("c1", "c1-greeting"),
            *answer("c1", 1, "t1", 3.0),
        ]
        assert d.feed(PromptFinished("c1", "c1-greeting"), 3.1) == []

    def test_answer_on_hold_stops_hold(self) -> None:
        """An answer after the greeting stops hold before bridging."""
        d = Driver()
        d.feed(arrived("c1"))
        d.feed(PromptFinished("c1", "c1-greeting"), 4.0)
        assert d.feed(HandsetAnswered(offer("c1", 1)), 6.0) == [
            CancelTimer(ring_timer("c1", 1)),
            StopHold("c1", HoldMode.RINGBACK),
            *answer("c1", 1, "t1", 6.0),
        ]

    def test_caller_hanging_up_ends_the_call_without_wrap_up(self) -> None:
        """The caller hanging up first is the normal end; wrapup 0 frees the taker."""
        d = Driver()
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 3.0)
        assert d.feed(CallerHungUp("c1"), 60.0) == [
            ReleaseHandset(offer("c1", 1)),
            EndCall("c1"),
            ev("c1", CallStage.HUNG_UP, 60.0, side="caller", cause=16, taker_id="t1", talk_s=57.0),
            PublishTakerState("t1", A, 60.0),
        ]

    def test_taker_plain_hangup_ends_the_call(self) -> None:
        """A taker's plain BYE (cause 16) ends the call for both sides (the
        handset's channel is gone already: no release for it)."""
        d = Driver()
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 3.0)
        assert d.feed(HandsetHungUp(offer("c1", 1), cause=16), 40.0) == [
            EndCall("c1"),
            ev("c1", CallStage.HUNG_UP, 40.0, side="taker", cause=16, taker_id="t1", talk_s=37.0),
            PublishTakerState("t1", A, 40.0),
        ]
        assert d.waiting() == []

    def test_centre_may_requeue_on_every_taker_hangup(self) -> None:
        """With requeue_on_taker_hangup even a plain BYE puts the caller back in the queue."""
        d = Driver(centre([queue(requeue_on_taker_hangup=True)], [taker("t1")]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 3.0)
        cmds = d.feed(HandsetHungUp(offer("c1", 1), cause=16), 40.0)
        assert cmds[:2] == [
            ev("c1", CallStage.TAKER_LEFT, 40.0, taker_id="t1", cause=16, side="taker"),
            ev("c1", CallStage.REQUEUED, 40.0, queue="main", reason="taker-left", at_head=True),
        ]
        assert not any(isinstance(c, EndCall) for c in cmds)

    def test_wrap_up_keeps_the_taker_from_calls_until_its_timer(self) -> None:
        """After a call the taker wraps up; only then are they offered the next caller."""
        d = Driver(centre([queue(wrapup_s=10.0)], [taker("t1")]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
        d.feed(arrived("c2"), 5.0)
        assert d.feed(CallerHungUp("c1"), 30.0) == [
            ReleaseHandset(offer("c1", 1)),
            EndCall("c1"),
            ev("c1", CallStage.HUNG_UP, 30.0, side="caller", cause=16, taker_id="t1", talk_s=28.0),
            PublishTakerState("t1", TakerStatus.WRAP_UP, 30.0),
            StartTimer("siaga-wrapup-t1", 40.0),
        ]
        assert d.feed(TimerFired("siaga-wrapup-t1"), 40.0) == [
            PublishTakerState("t1", A, 40.0),
            *ring("c2", 1, "t1", 40.0),
        ]


class TestAbandon:
    def test_abandon_while_waiting_yields_a_callback(self) -> None:
        """A caller who hangs up while waiting is a callback entry."""
        d = Driver(centre([queue(reassurance_every_s=30.0)], [taker("t1", logged_in=False)]))
        d.feed(arrived("c1"), 1.0)
        entry = CallbackEntry("c1", "0811000001", 1.0, 9.0, "main", "waiting")
        assert d.feed(CallerHungUp("c1", cause=16), 9.0) == [
            CancelTimer("siaga-reassure-c1"),
            ev(
                "c1",
                CallStage.ABANDONED,
                9.0,
                queue="main",
                where="waiting",
                wait_s=8.0,
                cause=16,
                number="0811000001",
            ),
            AddCallback(entry),
            EndCall("c1"),
        ]
        assert d.core.snapshot(9.0)["callbacks"] == [
            {
                "call_id": "c1",
                "number": "0811000001",
                "queue": "main",
                "arrived_at": 1.0,
                "abandoned_at": 9.0,
                "wait_s": 8.0,
                "where": "waiting",
            },
        ]

    def test_abandon_while_ringing_cancels_the_ring(self) -> None:
        """A caller who hangs up while a handset rings stops the ring; the taker is freed."""
        d = Driver()
        d.feed(arrived("c1"))
        entry = CallbackEntry("c1", "0811000001", 0.0, 4.0, "main", "ringing")
        assert d.feed(CallerHungUp("c1"), 4.0) == [
            CancelRing(offer("c1", 1)),
            CancelTimer(ring_timer("c1", 1)),
            PublishTakerState("t1", A, 4.0),
            ev(
                "c1",
                CallStage.ABANDONED,
                4.0,
                queue="main",
                where="ringing",
                wait_s=4.0,
                cause=16,
                number="0811000001",
            ),
            AddCallback(entry),
            EndCall("c1"),
        ]

    def test_answer_after_the_caller_left_releases_the_handset(self) -> None:
        """A handset that answers an offer whose caller already left is hung up."""
        d = Driver()
        d.feed(arrived("c1"))
        d.feed(CallerHungUp("c1"), 4.0)
        assert d.feed(HandsetAnswered(offer("c1", 1)), 4.1) == [ReleaseHandset(offer("c1", 1))]
        assert d.status("t1") == "available"


class TestRingNoAnswer:
    def test_no_answer_moves_on_to_the_next_taker_after_the_retry_delay(self) -> None:
        """An unanswered ring is cancelled and the next taker rings after retry_delay_s."""
        d = Driver(centre([queue(retry_delay_s=2.0)]))
        d.feed(arrived("c1"))
        assert d.feed(TimerFired(ring_timer("c1", 1)), 15.0) == [
            CancelRing(offer("c1", 1)),
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                15.0,
                taker_id="t1",
                attempt_id=offer("c1", 1),
                reason="no_answer",
            ),
            PublishTakerState("t1", A, 15.0),
            StartTimer("siaga-retry-c1", 17.0),
        ]
        assert d.feed(TimerFired("siaga-retry-c1"), 17.0) == ring("c1", 2, "t2", 17.0)

    def test_a_retry_timer_that_fires_a_hair_early_still_rings(self) -> None:
        """uvloop's timers run on a millisecond clock: the retry fires at 16.9995
        by the shell's clock, and the next taker rings all the same."""
        d = Driver(centre([queue(retry_delay_s=2.0)]))
        d.feed(arrived("c1"))
        d.feed(TimerFired(ring_timer("c1", 1)), 15.0)
        assert d.feed(TimerFired("siaga-retry-c1"), 16.9995) == ring("c1", 2, "t2", 16.9995)

    def test_auto_pause_after_max_consecutive_misses(self) -> None:
        """A taker who misses max_misses rings in a row is paused as missed-calls."""
        d = Driver(centre([queue(max_misses=2, retry_delay_s=0.0)], [taker("t1")]))
        d.feed(arrived("c1"))
        # first miss: the only taker is rung again at once (a new round)
        assert d.feed(HandsetFailed(offer("c1", 1), HandsetFailure.NO_ANSWER), 15.0) == [
            CancelTimer(ring_timer("c1", 1)),
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                15.0,
                taker_id="t1",
                attempt_id=offer("c1", 1),
                reason="no_answer",
            ),
            PublishTakerState("t1", A, 15.0),
            *ring("c1", 2, "t1", 15.0),
        ]
        assert d.feed(TimerFired(ring_timer("c1", 2)), 30.0) == [
            CancelRing(offer("c1", 2)),
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                30.0,
                taker_id="t1",
                attempt_id=offer("c1", 2),
                reason="no_answer",
            ),
            PublishTakerState("t1", PA, 30.0, MISSED_CALLS),
        ]
        # unpausing starts afresh: misses back to 0, and the caller is rung
        assert d.feed(TakerUnpaused("t1"), 40.0) == [
            PublishTakerState("t1", A, 40.0),
            *ring("c1", 3, "t1", 40.0),
        ]
        assert d.takers()[0]["misses"] == 0

    def test_busy_handset_is_not_a_miss_and_is_skipped_until_device_state(self) -> None:
        """A busy failure is not a miss; the taker is skipped until its device is free."""
        d = Driver()
        d.feed(arrived("c1"))
        assert d.feed(HandsetFailed(offer("c1", 1), HandsetFailure.BUSY), 1.0) == [
            CancelTimer(ring_timer("c1", 1)),
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                1.0,
                taker_id="t1",
                attempt_id=offer("c1", 1),
                reason="busy",
            ),
            PublishTakerState("t1", A, 1.0),
            StartTimer("siaga-device-t1", 31.0),
            *ring("c1", 2, "t2", 1.0),
        ]
        assert d.takers()[0]["misses"] == 0
        d.feed(arrived("c2", number="0811000002"), 2.0)
        assert d.waiting()[1]["state"] == "waiting"  # t1 blocked: c2 is not offered
        assert d.feed(TakerDeviceChanged("t1", reachable=True), 3.0) == [
            CancelTimer("siaga-device-t1"),
            *ring("c2", 1, "t1", 3.0, number="0811000002"),
        ]


class TestRequeue:
    def _two_waiting_behind_a_call(self, *, at_head: bool) -> Driver:
        rules = PriorityRules(numbers={"0811000099": 1})
        d = Driver(
            centre(
                [queue(priorities=rules, requeue_dropped_at_head=at_head)],
                [taker("t1"), taker("t2", logged_in=False)],
            )
        )
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
        d.feed(arrived("c2", number="0811000002"), 3.0)
        d.feed(arrived("c3", number="0811000099"), 4.0)  # a hospital: priority 1
        return d

    def test_taker_dropping_requeues_the_caller_at_the_head(self) -> None:
        """When the taker leaves mid-call the caller goes back to the head of the queue."""
        d = self._two_waiting_behind_a_call(at_head=True)
        assert d.feed(HandsetHungUp(offer("c1", 1), cause=34), 20.0) == [
            ev("c1", CallStage.TAKER_LEFT, 20.0, taker_id="t1", cause=34, side="taker"),
            ev("c1", CallStage.REQUEUED, 20.0, queue="main", reason="taker-left", at_head=True),
            StartHold("c1", HoldMode.RINGBACK, "default"),
            PublishTakerState("t1", A, 20.0),
            *ring("c1", 2, "t1", 20.0),
        ]
        assert [w["call_id"] for w in d.waiting()] == ["c1", "c3", "c2"]

    def test_dropped_caller_is_offered_to_another_taker_first(self) -> None:
        """After a drop the caller rings a different free taker, not the one who left."""
        d = Driver(centre([queue()], [taker("t1"), taker("t2")]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
        cmds = d.feed(HandsetHungUp(offer("c1", 1), cause=41), 10.0)
        rings = [c for c in cmds if isinstance(c, RingHandset)]
        assert [r.taker_id for r in rings] == ["t2"]

    def test_without_head_requeue_the_caller_keeps_its_arrival_place(self) -> None:
        """Without head requeue a dropped caller is requeued by priority and arrival."""
        d = self._two_waiting_behind_a_call(at_head=False)
        cmds = d.feed(HandsetHungUp(offer("c1", 1), cause=34), 20.0)
        assert cmds[1] == ev(
            "c1", CallStage.REQUEUED, 20.0, queue="main", reason="taker-left", at_head=False
        )
        assert cmds[-4:] == ring("c3", 1, "t1", 20.0, number="0811000099")
        assert [w["call_id"] for w in d.waiting()] == ["c3", "c1", "c2"]

    def test_failed_bridge_releases_the_handset_and_requeues(self) -> None:
        """If the bridge cannot be made the handset is released and the caller requeued."""
        d = Driver(centre([queue()], [taker("t1")]))
        d.feed(arrived("c1"))
        connect = next(
            c for c in d.feed(HandsetAnswered(offer("c1", 1)), 2.0) if isinstance(c, ConnectCall)
        )
        assert d.feed(CommandFailed(connect, "bridge gone"), 2.1) == [
            ReleaseHandset(offer("c1", 1)),
            ev("c1", CallStage.REQUEUED, 2.1, queue="main", reason="connect-failed", at_head=True),
            StartHold("c1", HoldMode.RINGBACK, "default"),
            PublishTakerState("t1", A, 2.1),
            *ring("c1", 2, "t1", 2.1),
        ]
        assert d.takers()[0]["calls_taken"] == 0


class TestPriority:
    def test_priority_caller_overtakes_earlier_callers(self) -> None:
        """A configured priority number is offered before callers who came earlier."""
        rules = PriorityRules(numbers={"0811000099": 1})
        d = Driver(centre([queue(priorities=rules)], [taker("t1", logged_in=False)]))
        d.feed(arrived("c1", number="0811000002"))
        d.feed(arrived("c2", number="0811000003"), 1.0)
        assert d.feed(arrived("c3", number="0811000099"), 2.0)[1] == ev(
            "c3",
            CallStage.ARRIVED,
            2.0,
            queue="main",
            number="0811000099",
            priority=1,
            repeat=False,
            trunk="",
        )
        d.feed(TakerLoggedIn("t1"), 3.0)
        assert [w["call_id"] for w in d.waiting()] == ["c3", "c1", "c2"]
        assert d.waiting()[0]["state"] == "ringing"

    def test_repeat_caller_gets_repeat_priority_within_the_window(self) -> None:
        """A number that called within repeat_window_s is served with repeat priority."""
        d = Driver(
            centre(
                [queue(priorities=PriorityRules(repeat_window_s=300.0))],
                [taker("t1", logged_in=False)],
            )
        )
        d.feed(arrived("c1", number="0811000005"))
        d.feed(CallerHungUp("c1"), 5.0)
        d.feed(arrived("c2", number="0811000006"), 6.0)
        again = d.feed(arrived("c3", number="0811000005"), 200.0)
        assert again[1] == ev(
            "c3",
            CallStage.ARRIVED,
            200.0,
            queue="main",
            number="0811000005",
            priority=3,
            repeat=True,
            trunk="",
        )
        late = d.feed(arrived("c4", number="0811000006"), 400.0)
        assert late[1] == ev(
            "c4",
            CallStage.ARRIVED,
            400.0,
            queue="main",
            number="0811000006",
            priority=5,
            repeat=False,
            trunk="",
        )

    def test_a_repeat_renews_the_number_and_old_numbers_are_forgotten(self) -> None:
        """A number's window runs from its latest call; numbers whose window
        has passed are dropped, so the memory holds one window of callers."""
        d = Driver(
            centre(
                [queue(priorities=PriorityRules(repeat_window_s=300.0))],
                [taker("t1", logged_in=False)],
            )
        )

        def repeat(call_id: str, number: str, at: float) -> object:
            published = d.feed(arrived(call_id, number=number), at)[1]
            assert isinstance(published, PublishCallEvent)
            return published.detail["repeat"]

        d.feed(arrived("c1", number="0811000001"))
        d.feed(arrived("c2", number="0811000002"), 10.0)
        assert repeat("c3", "0811000001", 200.0) is True
        for i in range(50):
            d.feed(arrived(f"n{i}", number=f"08120000{i:02d}"), 250.0 + i)
        # 0811000002 (last at 10 s) has passed its window; 0811000001 (200 s) has not.
        assert repeat("c4", "0811000002", 320.0) is False
        assert repeat("c5", "0811000001", 480.0) is True
        assert repeat("c6", "0811000009", 2000.0) is False
        assert list(d.core._last_seen) == ["0811000009"]  # everything older forgotten

    def test_empty_numbers_are_never_repeat_callers(self) -> None:
        """Two calls without a number are not treated as the same repeat caller."""
        d = Driver(centre([queue()], [taker("t1", logged_in=False)]))
        d.feed(arrived("c1", number=""))
        second = d.feed(arrived("c2", number=""), 1.0)
        assert second[1] == ev(
            "c2",
            CallStage.ARRIVED,
            1.0,
            queue="main",
            number="",
            priority=5,
            repeat=False,
            trunk="",
        )


class TestRingall:
    def test_ringall_rings_every_free_taker(self) -> None:
        """Under ringall every free taker of the queue rings for the caller."""
        d = Driver(centre([queue(strategy=Strategy.RINGALL)]))
        assert d.feed(arrived("c1")) == [
            *arrival("c1"),
            *ring("c1", 1, "t1", 0.0),
            *ring("c1", 2, "t2", 0.0),
        ]

    def test_first_answer_wins_and_the_other_rings_stop(self) -> None:
        """The first answer is connected; the other handsets stop ringing and are freed."""
        d = Driver(centre([queue(strategy=Strategy.RINGALL)]))
        d.feed(arrived("c1"))
        assert d.feed(HandsetAnswered(offer("c1", 2)), 3.0) == [
            CancelTimer(ring_timer("c1", 2)),
            CancelRing(offer("c1", 1)),
            CancelTimer(ring_timer("c1", 1)),
            PublishTakerState("t1", A, 3.0),
            StopPrompt("c1", "c1-greeting"),
            *answer("c1", 2, "t2", 3.0),
        ]

    def test_second_answer_of_a_race_is_released(self) -> None:
        """A second handset answering the same caller is hung up; no double connect."""
        d = Driver(centre([queue(strategy=Strategy.RINGALL)]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 2)), 3.0)
        assert d.feed(HandsetAnswered(offer("c1", 1)), 3.01) == [ReleaseHandset(offer("c1", 1))]
        assert d.feed(HandsetAnswered(offer("c1", 2)), 3.02) == []  # a repeated event
        assert [c["taker_id"] for c in d.connected()] == ["t2"]


class TestOverflow:
    def _centre(self, overflow: Overflow, backup_takers: bool = True) -> Driver:
        main = queue(overflow=overflow)
        backup = queue("backup", hold=HoldMode.MUSIC)
        takers = [taker("t1")]
        if backup_takers:
            takers.append(taker("t2", "backup"))
        return Driver(centre([main, backup], takers))

    def test_overflow_by_wait_moves_the_caller_to_the_backup_queue(self) -> None:
        """A caller waiting longer than after_s moves to the overflow queue and rings there."""
        d = self._centre(Overflow(after_s=20.0, queue="backup"))
        d.feed(TakerPaused("t1"))
        assert d.feed(arrived("c1"), 1.0) == [
            *arrival("c1", at=1.0),
            StartTimer("siaga-overflow-c1", 21.0),
        ]
        d.feed(PromptFinished("c1", "c1-greeting"), 4.0)
        aid = offer("c1", 1)
        assert d.feed(TimerFired("siaga-overflow-c1"), 21.0) == [
            ev(
                "c1",
                CallStage.OVERFLOWED,
                21.0,
                from_queue="main",
                to_queue="backup",
                reason="wait",
            ),
            StopHold("c1", HoldMode.RINGBACK),
            StartHold("c1", HoldMode.MUSIC, "default"),
            RingHandset(aid, "c1", "t2", "PJSIP/t2", 15.0, who()),
            StartTimer(ring_timer("c1", 1), 36.0),
            ev("c1", CallStage.OFFERED, 21.0, taker_id="t2", attempt_id=aid, queue="backup"),
            PublishTakerState("t2", R, 21.0),
        ]
        assert d.waiting("backup")[0]["wait_s"] == 20.0  # arrival time is kept

    def test_overflow_while_ringing_waits_for_the_ring_to_fail(self) -> None:
        """A caller whose handset is ringing at overflow time overflows only if it fails."""
        d = self._centre(Overflow(after_s=10.0, queue="backup"), backup_takers=False)
        d.feed(arrived("c1"))
        assert d.feed(TimerFired("siaga-overflow-c1"), 10.0) == []
        cmds = d.feed(HandsetFailed(offer("c1", 1), HandsetFailure.NO_ANSWER), 12.0)
        assert (
            ev(
                "c1",
                CallStage.OVERFLOWED,
                12.0,
                from_queue="main",
                to_queue="backup",
                reason="wait",
            )
            in cmds
        )
        assert d.waiting("backup")[0]["call_id"] == "c1"

    def test_no_takers_logged_in_redirects_to_the_backup_centre(self) -> None:
        """With nobody logged in, a caller is redirected to the backup centre at once."""
        main = queue(reassurance_every_s=30.0, overflow=Overflow(dial="PJSIP/112@jambi"))
        d = Driver(centre([main], [taker("t1", logged_in=False)]))
        assert d.feed(arrived("c1")) == [
            *arrival("c1"),
            StartTimer("siaga-reassure-c1", 30.0),
            CancelTimer("siaga-reassure-c1"),
            ev(
                "c1",
                CallStage.OVERFLOWED,
                0.0,
                from_queue="main",
                dial="PJSIP/112@jambi",
                reason="no-takers",
            ),
            RedirectCaller("c1", "PJSIP/112@jambi"),
        ]
        assert d.feed(CallerHungUp("c1"), 5.0) == []  # gone as planned: no callback
        assert d.core.snapshot(5.0)["callbacks"] == []

    def test_failed_redirect_brings_the_caller_back(self) -> None:
        """If the redirect fails the caller waits in our queue again; never lost."""
        d = Driver(
            centre(
                [queue(overflow=Overflow(dial="PJSIP/112@jambi"))], [taker("t1", logged_in=False)]
            )
        )
        redirect = d.feed(arrived("c1"))[-1]
        assert d.feed(CommandFailed(redirect, "no such context"), 0.5) == [
            ev("c1", CallStage.REQUEUED, 0.5, queue="main", reason="redirect-failed", at_head=True),
            StartHold("c1", HoldMode.RINGBACK, "default"),
        ]
        assert [w["call_id"] for w in d.waiting()] == ["c1"]
        assert d.feed(TakerLoggedIn("t1"), 9.0)[-4:] == ring("c1", 1, "t1", 9.0)

    def test_failed_redirect_from_a_removed_queue_lands_in_the_default_queue(self) -> None:
        """A failed redirect from a since-removed queue lands in the default queue."""
        backup = queue("backup", overflow=Overflow(dial="PJSIP/112@jambi"))
        d = Driver(centre([queue(), backup], [taker("t1", logged_in=False)]))
        redirect = d.feed(arrived("c1", q="backup"))[-1]
        assert isinstance(redirect, RedirectCaller)
        d.feed(ConfigChanged(centre([queue()], [taker("t1", logged_in=False)])), 1.0)
        d.feed(CommandFailed(redirect, "no such context"), 2.0)
        assert [w["call_id"] for w in d.waiting()] == ["c1"]
        assert d.feed(TakerLoggedIn("t1"), 3.0)[-4:] == ring("c1", 1, "t1", 3.0)

    def test_queue_without_overflow_target_keeps_callers_waiting(self) -> None:
        """A queue with no overflow target never rejects: the caller waits on."""
        d = Driver(centre([queue(overflow=Overflow(after_s=5.0))], [taker("t1", logged_in=False)]))
        assert d.feed(arrived("c1")) == arrival("c1")
        d.feed(TakerLoggedOut("t1"), 3600.0)
        assert [w["call_id"] for w in d.waiting()] == ["c1"]

    def test_overflow_loop_between_queues_stops(self) -> None:
        """Two unstaffed queues overflowing into each other do not loop forever."""
        a = queue("main", overflow=Overflow(queue="backup"))
        b = queue("backup", overflow=Overflow(queue="main"))
        d = Driver(
            centre([a, b], [taker("t1", logged_in=False), taker("t2", "backup", logged_in=False)])
        )
        cmds = d.feed(arrived("c1"))
        stages = [c.stage for c in cmds if hasattr(c, "stage")]
        assert stages.count(CallStage.OVERFLOWED) == 1
        assert d.waiting("backup")[0]["call_id"] == "c1"
        # when main gets a taker, the caller may go back there and is served
        back = d.feed(TakerLoggedIn("t1"), 10.0)
        assert (
            ev(
                "c1",
                CallStage.OVERFLOWED,
                10.0,
                from_queue="backup",
                to_queue="main",
                reason="no-takers",
            )
            in back
        )
        assert isinstance(back[-4], RingHandset)


class TestConfigChange:
    def test_new_logged_in_taker_is_offered_waiting_callers(self) -> None:
        """A taker added by a config change is available and offered at once."""
        d = Driver(centre([queue()], [taker("t1", logged_in=False)]))
        d.feed(arrived("c1"))
        new = centre([queue()], [taker("t1", logged_in=False), taker("t9")])
        assert d.feed(ConfigChanged(new), 5.0) == [
            PublishTakerState("t9", A, 5.0),
            *ring("c1", 1, "t9", 5.0),
        ]

    def test_removed_taker_finishes_the_call_then_leaves(self) -> None:
        """A taker removed from the config keeps their call and is logged out after it."""
        d = Driver(centre([queue(wrapup_s=30.0)]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 2.0)
        assert d.feed(ConfigChanged(centre([queue(wrapup_s=30.0)], [taker("t2")])), 5.0) == []
        assert d.status("t1") == "on_call"
        cmds = d.feed(CallerHungUp("c1"), 50.0)
        assert cmds[-1] == PublishTakerState("t1", TakerStatus.OFFLINE, 50.0)
        assert d.status("t1") == "absent"

    def test_removed_ringing_taker_stops_ringing_and_the_caller_moves_on(self) -> None:
        """A ringing taker removed from the config stops ringing; the next taker rings."""
        d = Driver()
        d.feed(arrived("c1"))
        new = centre([queue()], [taker("t2")])
        assert d.feed(ConfigChanged(new), 3.0) == [
            CancelRing(offer("c1", 1)),
            CancelTimer(ring_timer("c1", 1)),
            PublishTakerState("t1", TakerStatus.OFFLINE, 3.0),
            *ring("c1", 2, "t2", 3.0),
        ]

    def test_callers_of_a_removed_queue_move_to_the_default_queue(self) -> None:
        """Callers waiting in a queue that was removed move to the default queue."""
        d = Driver(centre([queue(), queue("backup")], [taker("t1", "backup", logged_in=False)]))
        d.feed(arrived("c1", q="backup"))
        assert d.feed(ConfigChanged(centre([queue()], [taker("t1", logged_in=False)])), 4.0) == [
            ev(
                "c1",
                CallStage.OVERFLOWED,
                4.0,
                from_queue="backup",
                to_queue="main",
                reason="queue-removed",
            ),
        ]
        assert d.waiting()[0]["call_id"] == "c1"


class TestCommandFailed:
    def test_failed_ring_is_like_unreachable_and_the_next_taker_rings(self) -> None:
        """A RingHandset that fails blocks that taker and moves on at once."""
        d = Driver()
        ring_cmd = d.feed(arrived("c1"))[4]
        assert isinstance(ring_cmd, RingHandset)
        assert d.feed(CommandFailed(ring_cmd, "endpoint not found"), 0.2) == [
            CancelTimer(ring_timer("c1", 1)),
            ev(
                "c1",
                CallStage.OFFER_FAILED,
                0.2,
                taker_id="t1",
                attempt_id=offer("c1", 1),
                reason="originate-failed",
            ),
            PublishTakerState("t1", A, 0.2),
            StartTimer("siaga-device-t1", 30.2),
            *ring("c1", 2, "t2", 0.2),
        ]

    def test_failed_wrap_up_timer_ends_wrap_up_at_once(self) -> None:
        """A wrap-up timer that cannot be started does not strand the taker."""
        d = Driver(centre([queue(wrapup_s=10.0)], [taker("t1")]))
        d.feed(arrived("c1"))
        d.feed(HandsetAnswered(offer("c1", 1)), 1.0)
        timer = d.feed(CallerHungUp("c1"), 9.0)[-1]
        assert timer == StartTimer("siaga-wrapup-t1", 19.0)
        assert d.feed(CommandFailed(timer, "loop closed"), 9.0) == [PublishTakerState("t1", A, 9.0)]

    def test_failures_needing_nothing_are_ignored(self) -> None:
        """Failures of commands that need no recovery change nothing."""
        d = Driver()
        d.feed(arrived("c1"))
        before = d.core.snapshot(1.0)
        for cmd in (
            AnswerCaller("c1"),
            StopHold("c1", HoldMode.RINGBACK),
            EndCall("zz"),
            CancelRing(offer("c1", 1)),
            StartTimer("siaga-reassure-zz", 1.0),
        ):
            assert d.feed(CommandFailed(cmd, "x"), 1.0) == []
        assert d.core.snapshot(1.0) == before
