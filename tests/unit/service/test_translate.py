"""The one translator: ARI events into both cores' events (``service._translate``)."""

from __future__ import annotations

import base64
import json
from typing import Any, get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from siaga_pbx import ari, conference, core
from siaga_pbx.service import (
    FeatureRequest,
    HandBack,
    TakerDirectory,
    Translated,
    feature_event,
    translate,
)

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"),),
)
TAKERS = TakerDirectory.from_config(CENTRE)


def channel(cid: str, state: str = "Up", **extra: Any) -> dict[str, Any]:
    return {
        "id": cid,
        "name": f"PJSIP/trunk-{cid[-4:]}",
        "state": state,
        "caller": {"name": "Chan Name", "number": "0811"},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {
            "context": "siaga-emergency",
            "exten": "s",
            "priority": 9,
            "app_name": "Stasis",
            "app_data": "",
        },
        "creationtime": "2026-11-28T20:00:00.000+0000",
        "language": "id",
        **extra,
    }


def event(kind: str, **fields: Any) -> ari.Event:
    payload = {
        "type": kind,
        "application": "siaga-112",
        "timestamp": "2026-11-28T20:00:01.000+0000",
        **fields,
    }
    return ari.parse_event(json.dumps(payload))


def run(ev: ari.Event) -> list[Translated]:
    return translate(ev, TAKERS.taker_for, "main")


class TestCallers:
    def test_caller_arrives_with_raw_headers(self) -> None:
        """StasisStart of a caller becomes CallerArrived with From and PAI parsed."""
        ch = channel(
            "siaga-test-1.7",
            channelvars={
                "SIAGA_FROM": '"Budi" <sip:0811222@op>;tag=1',
                "SIAGA_PAI": "<tel:+62811222>",
            },
        )
        out = run(event("StasisStart", args=["caller", "trunk"], channel=ch))
        assert out == [
            core.CallerArrived(
                call_id="siaga-test-1.7",
                caller=core.CallerIdentity(number="0811222", name="Budi", pai="+62811222"),
                queue="main",
                trunk="trunk",
                answered=True,
            )
        ]

    def test_caller_without_headers_uses_channel_caller_id(self) -> None:
        """Without exported headers the channel's caller id is used."""
        out = run(event("StasisStart", args=["caller"], channel=channel("1.8")))
        assert isinstance(out[0], core.CallerArrived)
        assert out[0].caller == core.CallerIdentity(number="0811", name="Chan Name")

    def test_caller_arrives_with_the_raw_header_bytes(self) -> None:
        """The dialplan's base64 header copies reach CallerArrived as the exact bytes."""
        from_raw = b'"Bad \xff\xfe\x01" <sip:0811222@op>;tag=1'
        ch = channel(
            "siaga-test-1.8",
            channelvars={
                "SIAGA_FROM": from_raw.decode("utf-8", "replace"),
                "SIAGA_PAI": "<tel:+62811222>",
                "SIAGA_FROM_B64": base64.b64encode(from_raw).decode(),  # no % ( ) in it
                "SIAGA_PAI_B64": base64.b64encode(b"<tel:+62811222>").decode(),
            },
        )
        out = run(event("StasisStart", args=["caller", "trunk"], channel=ch))
        assert isinstance(out[0], core.CallerArrived)
        assert out[0].caller.from_raw == from_raw
        assert out[0].caller.pai_raw == b"<tel:+62811222>"
        assert out[0].caller.name == "Bad \ufffd\ufffd\ufffd"

    def test_a_caller_already_up_is_not_answered_again(self) -> None:
        """The dialplan answers before Stasis(); a channel still ringing gets our answer."""
        up = run(event("StasisStart", args=["caller"], channel=channel("1.8", state="Up")))
        ringing = run(event("StasisStart", args=["caller"], channel=channel("1.9", state="Ring")))
        assert isinstance(up[0], core.CallerArrived) and up[0].answered
        assert isinstance(ringing[0], core.CallerArrived) and not ringing[0].answered

    def test_caller_queue_argument(self) -> None:
        """A third Stasis argument names the queue."""
        out = run(event("StasisStart", args=["caller", "trunk", "backup"], channel=channel("1.9")))
        assert isinstance(out[0], core.CallerArrived) and out[0].queue == "backup"

    def test_caller_gone(self) -> None:
        """StasisEnd and ChannelDestroyed of a caller both report the hangup, to
        the conference core first, then to the distribution core."""
        assert run(event("StasisEnd", channel=channel("1.7"))) == [
            conference.CallerLeft("1.7", 16),
            core.CallerHungUp("1.7", 16),
        ]
        destroyed = event("ChannelDestroyed", channel=channel("1.7"), cause=17, cause_txt="Busy")
        assert run(destroyed) == [conference.CallerLeft("1.7", 17), core.CallerHungUp("1.7", 17)]

    def test_unsafe_caller_id_is_handed_back(self) -> None:
        """A channel id that could not name a file is not used: the caller goes to the fallback."""
        out = run(event("StasisStart", args=["caller"], channel=channel("../../etc")))
        assert out == [HandBack("../../etc", "unsafe channel id")]


class TestOffers:
    def test_answer(self) -> None:
        """An offer channel entering the app means the taker answered."""
        out = run(event("StasisStart", args=["offer", "1.7"], channel=channel("siaga-offer-1.7-1")))
        assert out == [core.HandsetAnswered("siaga-offer-1.7-1")]

    def test_ringing(self) -> None:
        """An offer channel going to Ringing is HandsetRinging; other states are nothing."""
        ringing = event("ChannelStateChange", channel=channel("siaga-offer-1.7-1", "Ringing"))
        assert run(ringing) == [core.HandsetRinging("siaga-offer-1.7-1")]
        up = event("ChannelStateChange", channel=channel("siaga-offer-1.7-1", "Up"))
        assert run(up) == []

    def test_failures_by_cause(self) -> None:
        """An offer destroyed before answer fails with a reason from its Q.850 cause."""
        expected = {
            16: core.HandsetFailure.NO_ANSWER,  # the one Q.850 table: as the conference core
            17: core.HandsetFailure.BUSY,
            19: core.HandsetFailure.NO_ANSWER,
            21: core.HandsetFailure.REJECTED,
            20: core.HandsetFailure.UNREACHABLE,
        }
        for cause, reason in expected.items():
            ev = event(
                "ChannelDestroyed",
                channel=channel("siaga-offer-1.7-2", "Ring"),
                cause=cause,
                cause_txt="",
            )
            assert run(ev) == [core.HandsetFailed("siaga-offer-1.7-2", reason)]

    def test_answered_handset_hangs_up(self) -> None:
        """An answered offer destroyed is the taker leaving, with the cause."""
        ev = event(
            "ChannelDestroyed", channel=channel("siaga-offer-1.7-2", "Up"), cause=16, cause_txt=""
        )
        assert run(ev) == [
            conference.TakerLeft("1.7", "siaga-offer-1.7-2"),
            core.HandsetHungUp("siaga-offer-1.7-2", 16),
        ]
        assert run(event("StasisEnd", channel=channel("siaga-offer-1.7-2"))) == []


class TestOthers:
    def test_prompt_finished_on_bridge(self) -> None:
        """A playback on the call's bridge maps back to the call."""
        pb = {
            "id": "1.7-greeting",
            "media_uri": "sound:siaga/greeting",
            "target_uri": "bridge:siaga-call-1.7",
            "language": "id",
            "state": "done",
        }
        assert run(event("PlaybackFinished", playback=pb)) == [
            core.PromptFinished("1.7", "1.7-greeting")
        ]

    def test_device_state(self) -> None:
        """Device state of a taker's handset becomes TakerDeviceChanged."""

        def dev(name: str, state: str) -> list[Translated]:
            return run(event("DeviceStateChanged", device_state={"name": name, "state": state}))

        assert dev("PJSIP/taker1", "UNAVAILABLE") == [
            core.TakerDeviceChanged("taker1", reachable=False)
        ]
        assert dev("PJSIP/taker1", "INVALID") == [
            core.TakerDeviceChanged("taker1", reachable=False)
        ]
        for busy in ("INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"):
            assert dev("PJSIP/taker1", busy) == [
                core.TakerDeviceChanged("taker1", reachable=True, in_use=True)
            ], busy
        for free in ("NOT_INUSE", "UNKNOWN"):
            assert dev("PJSIP/taker1", free) == [
                core.TakerDeviceChanged("taker1", reachable=True, in_use=False)
            ], free
        assert dev("PJSIP/someone", "INUSE") == []
        assert dev("Custom:taker1", "INUSE") == []

    def test_feature_codes(self) -> None:
        """A feature-code call names the taker by endpoint and maps to its event."""
        out = run(event("StasisStart", args=["feature", "pause", "taker1"], channel=channel("2.1")))
        assert out == [FeatureRequest("2.1", "taker1", "pause")]
        assert feature_event(FeatureRequest("2.1", "taker1", "pause")) == core.TakerPaused(
            "taker1", "handset"
        )
        assert feature_event(FeatureRequest("2.1", "taker1", "login")) == core.TakerLoggedIn(
            "taker1"
        )
        assert feature_event(FeatureRequest("2.1", None, "login")) is None
        assert feature_event(FeatureRequest("2.1", "taker1", "dance")) is None

    def test_unknown_event_is_nothing(self) -> None:
        """Events we do not model translate to nothing."""
        assert (
            run(event("TextMessageReceived", message={"from": "x", "to": "y", "body": "z"})) == []
        )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


class TestFuzz:
    @settings(max_examples=300)
    @given(
        st.sampled_from(
            [
                "StasisStart",
                "StasisEnd",
                "ChannelDestroyed",
                "ChannelStateChange",
                "PlaybackFinished",
                "DeviceStateChanged",
            ]
        ),
        st.text(max_size=40),
        st.lists(st.text(max_size=30), max_size=4),
        st.dictionaries(st.sampled_from(["SIAGA_FROM", "SIAGA_PAI", "X"]), st.text(max_size=200)),
        _json,
    )
    def test_any_parsable_event_translates_or_is_ignored(
        self, kind: str, cid: str, args: list[str], vars_: dict[str, str], junk: Any
    ) -> None:
        """Whatever a parsable event holds, translation yields valid core events or nothing."""
        payload = {
            "type": kind,
            "args": args,
            "channel": channel(cid, channelvars=vars_, junk=junk),
            "cause": 16,
            "playback": {
                "id": cid,
                "media_uri": "x",
                "target_uri": f"bridge:siaga-call-{cid}",
                "state": "done",
            },
            "device_state": {"name": f"PJSIP/{cid}", "state": args[0] if args else "INUSE"},
        }
        try:
            ev = ari.parse_event(json.dumps(payload))
        except ari.MalformedEvent:
            return
        for out in translate(ev, TAKERS.taker_for, "main"):
            assert isinstance(
                out,
                (FeatureRequest, HandBack, *get_args(core.Event), *get_args(conference.Event)),
            )


class TestConferenceLegs:
    """Dispatcher legs, snoops and keypad digits, classified by the same translator."""

    def test_leg_answers_and_goes(self) -> None:
        """A leg entering is PartyAnswered; destroyed, PartyGone with its cause; its
        StasisEnd alone is nothing (the cause comes with ChannelDestroyed)."""
        leg = "siaga-disp-1.7-1"
        assert run(event("StasisStart", args=["party", "1.7"], channel=channel(leg))) == [
            conference.PartyAnswered(leg)
        ]
        assert run(event("StasisEnd", channel=channel(leg))) == []
        gone = event("ChannelDestroyed", channel=channel(leg), cause=17, cause_txt="Busy")
        assert run(gone) == [conference.PartyGone(leg, 17)]

    def test_snoop_ready(self) -> None:
        """A snoop channel entering the app is SnoopReady, never a caller."""
        snoop = "siaga-snoop-1.7-1"
        assert run(event("StasisStart", args=[], channel=channel(snoop))) == [
            conference.SnoopReady(snoop)
        ]
        assert run(event("StasisEnd", channel=channel(snoop))) == []

    def test_digits_count_only_on_a_takers_offer(self) -> None:
        """DTMF on a taker's offer is a key press; a caller's or a dispatcher's is nothing."""
        for cid, expected in (
            ("siaga-offer-1.7-1", [conference.KeyPressed("siaga-offer-1.7-1", "1")]),
            ("1.7", []),
            ("siaga-disp-1.7-1", []),
        ):
            ev = event("ChannelDtmfReceived", channel=channel(cid), digit="1", duration_ms=100)
            assert run(ev) == expected

    def test_unsafe_leg_id_is_neither_a_party_nor_a_caller(self) -> None:
        """A leg-prefixed id with unsafe characters is ignored, never handed back as a caller."""
        bad = "siaga-disp-../x-1"
        assert run(event("StasisStart", args=["party"], channel=channel(bad))) == []
        assert run(event("ChannelDestroyed", channel=channel(bad), cause=16, cause_txt="")) == []


class TestOneQ850Table:
    def test_both_cores_read_an_unanswered_ring_alike(self) -> None:
        """The conference core names a failed dispatcher ring from the same table
        the translator uses for a taker's offer."""
        for cause in (16, 17, 18, 19, 21, 31, 1, 20, 34, 127):
            assert core.ring_failure(cause) in set(core.HandsetFailure)
        assert core.ring_failure(16) is core.HandsetFailure.NO_ANSWER
        assert core.ring_failure(17) is core.HandsetFailure.BUSY
        assert core.ring_failure(21) is core.HandsetFailure.REJECTED
        assert core.ring_failure(1) is core.HandsetFailure.UNREACHABLE
