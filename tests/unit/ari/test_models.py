"""Parsing ARI events: the models, unknown types, malformed input, and a fuzzer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from siaga_pbx import ari
from siaga_pbx.ari import MalformedEvent, parse_event

from . import _samples

pytestmark = pytest.mark.timeout(60)


class TestKnownEvents:
    @pytest.mark.parametrize("event_type", sorted(_samples.EVENTS))
    def test_every_modelled_type_parses_into_its_class(self, event_type: str) -> None:
        """Each modelled event type parses into the class of the same name."""
        event = parse_event(json.dumps(_samples.EVENTS[event_type]))
        assert type(event).__name__ == event_type
        assert event.type == event_type
        assert event.application == "siaga112"
        assert event.asterisk_id == "52:54:00:12:34:56"

    def test_stasis_start_keeps_args_channel_and_replace_channel(self) -> None:
        """StasisStart exposes args, the caller channel and replace_channel."""
        event = parse_event(json.dumps(_samples.EVENTS["StasisStart"]).encode())
        assert isinstance(event, ari.StasisStart)
        assert event.args == ("inbound",)
        assert event.channel.id == "1732812345.12"
        assert event.channel.caller == ari.CallerId(name="Budi", number="081234567890")
        assert event.channel.dialplan.priority == 2
        assert event.channel.dialplan.app_data == "siaga112,inbound"
        assert event.channel.language == "id"
        assert event.channel.channelvars is None
        assert event.replace_channel is not None
        assert event.replace_channel.id == "9.9"

    def test_asterisk_timestamps_without_colon_offset_parse(self) -> None:
        """Asterisk's '+0700' style offsets parse into aware datetimes."""
        event = parse_event(json.dumps(_samples.EVENTS["StasisEnd"]))
        expected = datetime(2026, 11, 28, 19, 50, 1, 123000, tzinfo=timezone(timedelta(hours=7)))
        assert event.timestamp == expected
        assert event.timestamp.astimezone(UTC).hour == 12

    def test_channel_destroyed_carries_cause(self) -> None:
        """ChannelDestroyed carries the Q.850 cause and its text."""
        event = parse_event(json.dumps(_samples.EVENTS["ChannelDestroyed"]))
        assert isinstance(event, ari.ChannelDestroyed)
        assert (event.cause, event.cause_txt) == (16, "Normal Clearing")

    def test_dtmf_digit_and_duration(self) -> None:
        """ChannelDtmfReceived carries the digit and its duration."""
        event = parse_event(json.dumps(_samples.EVENTS["ChannelDtmfReceived"]))
        assert isinstance(event, ari.ChannelDtmfReceived)
        assert (event.digit, event.duration_ms) == ("5", 120)

    def test_optional_fields_may_be_absent(self) -> None:
        """Dial without caller and ChannelEnteredBridge without channel still parse."""
        dial = _samples.event("Dial", dialstatus="RINGING", peer=_samples.channel())
        entered = _samples.event("ChannelEnteredBridge", bridge=_samples.bridge())
        parsed_dial = parse_event(json.dumps(dial))
        parsed_entered = parse_event(json.dumps(entered))
        assert isinstance(parsed_dial, ari.Dial)
        assert parsed_dial.caller is None
        assert isinstance(parsed_entered, ari.ChannelEnteredBridge)
        assert parsed_entered.channel is None

    def test_extra_fields_from_newer_asterisk_are_ignored(self) -> None:
        """Fields Asterisk adds in later versions never make an event malformed."""
        payload = _samples.stasis_start()
        payload["brand_new_field"] = {"nested": [1, 2]}
        payload["channel"]["another_new_field"] = "x"
        event = parse_event(json.dumps(payload))
        assert isinstance(event, ari.StasisStart)
        assert not hasattr(event, "brand_new_field")

    def test_events_are_frozen(self) -> None:
        """A parsed event cannot be changed by a consumer."""
        event = parse_event(json.dumps(_samples.stasis_start()))
        assert isinstance(event, ari.StasisStart)
        with pytest.raises(pydantic.ValidationError, match="frozen"):
            event.channel.id = "other"  # type: ignore[misc]

    def test_common_fields_may_be_missing(self) -> None:
        """ApplicationReplaced is recognised even without application and timestamp."""
        event = parse_event('{"type": "ApplicationReplaced"}')
        assert isinstance(event, ari.ApplicationReplaced)
        assert (event.application, event.timestamp, event.asterisk_id) == (None, None, None)


class TestUnknownEvents:
    def test_unknown_type_becomes_unknown_event_with_raw(self) -> None:
        """An event type we do not model parses into UnknownEvent keeping the raw object."""
        payload = _samples.event("ChannelTalkingStarted", channel=_samples.channel())
        event = parse_event(json.dumps(payload))
        assert isinstance(event, ari.UnknownEvent)
        assert event.type == "ChannelTalkingStarted"
        assert event.raw == payload
        assert event.application == "siaga112"

    def test_unknown_type_with_odd_common_fields_still_parses(self) -> None:
        """An unknown event never fails, even when its common fields are malformed."""
        event = parse_event('{"type": "Brandnew", "timestamp": 17, "application": []}')
        assert isinstance(event, ari.UnknownEvent)
        assert event.timestamp is None
        assert event.raw == {"type": "Brandnew", "timestamp": 17, "application": []}


class TestMalformedEvents:
    @pytest.mark.parametrize(
        ("data", "needle"),
        [
            ("not json{", "not valid JSON"),
            (b"\xff\xfe\x00", "not valid JSON"),
            ("[1, 2]", "JSON list, not an object"),
            ('"StasisStart"', "JSON str, not an object"),
            ('{"no_type": 1}', "no string 'type'"),
            ('{"type": 7}', "no string 'type'"),
            ('{"type": "StasisStart", "args": []}', "StasisStart event is malformed"),
            ("[" * 100_000, "not valid JSON"),
        ],
    )
    def test_bad_input_raises_malformed_event(self, data: str | bytes, needle: str) -> None:
        """Bad JSON, non-objects and missing required fields raise MalformedEvent."""
        with pytest.raises(MalformedEvent, match=needle):
            parse_event(data)

    def test_malformed_event_is_a_value_error_naming_the_missing_field(self) -> None:
        """MalformedEvent is a ValueError and names the field that is missing."""
        payload = _samples.stasis_start()
        del payload["channel"]["id"]
        with pytest.raises(ValueError, match=r"channel\.id: Field required"):
            parse_event(json.dumps(payload))

    def test_message_does_not_echo_control_characters(self) -> None:
        """Control characters from the payload are escaped in the error message."""
        payload = _samples.stasis_start()
        payload["channel"]["channelvars"] = {"EVIL\x1b[31m": 5}
        with pytest.raises(MalformedEvent) as info:
            parse_event(json.dumps(payload))
        assert "\x1b" not in str(info.value)
        assert "\\x1b" in str(info.value)


# --- fuzzing -------------------------------------------------------------------

_json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
_event_types = st.sampled_from(sorted(_samples.EVENTS)) | st.text(max_size=20)


def _parse_or_malformed(data: str | bytes) -> ari.Event | None:
    try:
        event = parse_event(data)
    except MalformedEvent:
        return None
    assert isinstance(event, pydantic.BaseModel)
    assert isinstance(event.type, str)
    return event


class TestParseEventFuzz:
    @settings(max_examples=300, deadline=None)
    @given(data=st.binary(max_size=200))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Arbitrary bytes either parse or raise MalformedEvent, nothing else."""
        _parse_or_malformed(data)

    @settings(max_examples=300, deadline=None)
    @given(value=_json_values)
    def test_arbitrary_json_values(self, value: Any) -> None:
        """Arbitrary JSON values either parse or raise MalformedEvent, nothing else."""
        _parse_or_malformed(json.dumps(value))

    @settings(max_examples=500, deadline=None)
    @given(
        event_type=_event_types,
        fields=st.dictionaries(
            st.sampled_from(
                [
                    "args",
                    "channel",
                    "bridge",
                    "cause",
                    "digit",
                    "peer",
                    "playback",
                    "recording",
                    "endpoint",
                    "timestamp",
                    "application",
                    "replace_channel",
                ]
            ),
            _json_values,
            max_size=5,
        ),
    )
    def test_objects_with_a_type_and_random_fields(
        self, event_type: str, fields: dict[str, Any]
    ) -> None:
        """Objects with a real or random type and random fields parse or raise MalformedEvent."""
        event = _parse_or_malformed(json.dumps({**fields, "type": event_type}))
        if event is not None and event_type not in _samples.EVENTS:
            assert isinstance(event, ari.UnknownEvent)

    @settings(max_examples=500, deadline=None)
    @given(
        event_type=st.sampled_from(sorted(_samples.EVENTS)),
        path_choice=st.integers(min_value=0, max_value=10_000),
        replacement=_json_values,
    )
    def test_valid_events_with_one_value_replaced(
        self, event_type: str, path_choice: int, replacement: Any
    ) -> None:
        """A valid event with any one nested value replaced parses or raises MalformedEvent."""
        payload = json.loads(json.dumps(_samples.EVENTS[event_type]))
        containers: list[tuple[dict[str, Any], str]] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, child in node.items():
                    containers.append((node, key))
                    walk(child)

        walk(payload)
        parent, key = containers[path_choice % len(containers)]
        parent[key] = replacement
        _parse_or_malformed(json.dumps(payload))
