"""Hostile and malformed input at the unit level: raw websocket frames, odd ARI
events through the whole consumer, and log lines built from caller data."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siaga_pbx import ari, callerid, core, logs
from siaga_pbx.service import CallService, TakerDirectory, translate

CENTRE = core.CentreConfig(
    queues=(core.QueueConfig("main"),),
    takers=(core.TakerConfig("taker1", "PJSIP/taker1"),),
)
TAKERS = TakerDirectory.from_config(CENTRE)

HOSTILE = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "\"'; DROP TABLE calls; --",
            "../../etc/passwd",
            "a\r\nX-Injected: 1",
            '{"event": "forged"}\n{"level": "critical"}',
            "\x00\x01\x1b[31mred\x7f",
            "\u2028\u2029\ufeff\udcff",
            "A" * 2048,
            "<sip:@@;;>>",
        ]
    ),
)


def _channel(cid: str, name: str, number: str, vars_: dict[str, str]) -> dict[str, Any]:
    return {
        "id": cid,
        "name": "PJSIP/trunk-00000001",
        "state": "Ring",
        "caller": {"name": name, "number": number},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "siaga-emergency", "exten": "s", "priority": 9},
        "creationtime": "2026-11-28T10:00:00.000+0000",
        "language": "id",
        "channelvars": vars_,
    }


class FakeRunner:
    """Records what the consumer asked of Asterisk; never fails."""

    def __init__(self) -> None:
        self.ran: list[object] = []
        self.handed_back: list[str] = []

    async def run(self, cmd: object) -> None:
        self.ran.append(cmd)

    async def hand_back(self, call_id: str) -> None:
        self.handed_back.append(call_id)

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        return None

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        return None


async def _consume(service: CallService, item: Any) -> None:
    task = asyncio.create_task(service.run())
    service.submit(item)
    await asyncio.wait_for(service.idle(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class TestRawFrames:
    @settings(max_examples=300)
    @given(st.binary(max_size=400) | st.text(max_size=400))
    def test_any_frame_parses_or_is_malformed(self, frame: bytes | str) -> None:
        """A websocket frame of any bytes yields an event or MalformedEvent, nothing else."""
        message = ""
        try:
            ev = ari.parse_event(frame)
        except ari.MalformedEvent as exc:
            message = str(exc)
        else:
            assert isinstance(translate(ev, TAKERS.taker_for, "main"), list)
        assert "\n" not in message

    def test_invalid_utf8_and_deep_nesting_are_malformed(self) -> None:
        """Invalid UTF-8 and absurd nesting are refused as malformed, not crashes."""
        with pytest.raises(ari.MalformedEvent):
            ari.parse_event(b'{"type": "StasisStart", "x": "\xff\xfe"}')
        with pytest.raises(ari.MalformedEvent):
            ari.parse_event('{"type": "StasisStart", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")


class TestConsumer:
    @settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.text(alphabet="0123456789.abcz-_/ ", min_size=1, max_size=40),
        st.lists(HOSTILE, max_size=4),
        HOSTILE,
        HOSTILE,
        st.dictionaries(st.sampled_from(["SIAGA_FROM", "SIAGA_PAI"]), HOSTILE),
    )
    def test_every_caller_is_served_or_handed_back(
        self, cid: str, tail: list[str], name: str, number: str, vars_: dict[str, str]
    ) -> None:
        """A caller's StasisStart, whatever it carries, is taken by the core or handed back."""
        payload = {
            "type": "StasisStart",
            "application": "siaga-112",
            "timestamp": "2026-11-28T10:00:00.000+0000",
            "args": ["caller", *tail],
            "channel": _channel(cid, name, number, vars_),
        }
        try:
            ev = ari.parse_event(json.dumps(payload))
        except ari.MalformedEvent:
            return
        runner = FakeRunner()
        service = CallService(
            distributor=core.Distributor(CENTRE),
            telephony=runner,
        )
        asyncio.run(_consume(service, ev))
        if cid.startswith(("siaga-disp-", "siaga-snoop-", "siaga-offer-")):
            return  # not a caller channel
        served = cid in service.distributor.known_calls()
        assert served or cid in runner.handed_back, (cid, runner.ran)
        if served:
            who = service.distributor.snapshot(0.0)["queues"][0]
            numbers = [c["number"] for c in who["waiting"] + who["connected"]]
            assert all(set(n) <= set("0123456789+*#") for n in numbers), numbers


class TestLogLines:
    @settings(max_examples=200)
    @given(HOSTILE, HOSTILE)
    def test_caller_data_cannot_forge_a_log_line(self, name: str, number: str) -> None:
        """Whatever a caller sends, each log line stays exactly one JSON object."""
        out = io.StringIO()
        saved = sys.stdout
        sys.stdout = out
        try:
            logs.configure("DEBUG")
            structlog.get_logger("fuzz").info(
                "caller.seen", name=name, number=number, parsed=callerid.clean_text(name, 64)
            )
        finally:
            sys.stdout = saved
            structlog.reset_defaults()
        lines = out.getvalue().splitlines()
        assert len(lines) == 1, lines
        assert json.loads(lines[0])["event"] == "caller.seen"

    def test_secrets_are_redacted(self) -> None:
        """Values under secret-looking keys never reach the log."""
        out = io.StringIO()
        saved = sys.stdout
        sys.stdout = out
        try:
            logs.configure("INFO")
            structlog.get_logger("fuzz").info("x", password="hunter2", token="t0k3n")
        finally:
            sys.stdout = saved
            structlog.reset_defaults()
        assert "hunter2" not in out.getvalue()
        assert "t0k3n" not in out.getvalue()
