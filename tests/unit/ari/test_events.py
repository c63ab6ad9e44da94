"""EventStream against a scripted fake ARI websocket: order, reconnects, failures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from siaga_pbx import ari
from siaga_pbx.ari import Backoff, EventStream

from . import _samples
from ._fake_ari import PASSWORD, USERNAME, FakeAri

pytestmark = pytest.mark.timeout(5)

APP = "siaga112"


def _stream(
    session: aiohttp.ClientSession,
    ws_url: str,
    *,
    password: str = PASSWORD,
    on_connected: ari.OnConnected | None = None,
    heartbeat_s: float = 5.0,
) -> EventStream:
    return EventStream(
        session,
        ws_url,
        USERNAME,
        password,
        APP,
        on_connected=on_connected,
        heartbeat_s=heartbeat_s,
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
        rng=random.Random(112),
    )


@contextlib.asynccontextmanager
async def _running(stream: EventStream) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(stream.run())
    try:
        yield task
    finally:
        await stream.close()


async def _get(stream: EventStream, n: int, timeout_s: float = 2.0) -> list[ari.Event]:
    async with asyncio.timeout(timeout_s):
        return [await stream.events.get() for _ in range(n)]


async def _eventually(predicate: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - the fake's counters have no event to await
            await asyncio.sleep(0.01)


def _ids(events: list[ari.Event]) -> list[str]:
    out = []
    for event in events:
        if isinstance(event, ari.StasisStart):
            out.append(event.channel.id)
        elif isinstance(event, ari.UnknownEvent):
            out.append(f"{event.type}:{event.raw['n']}")
        else:
            out.append(event.type)
    return out


def _logs_named(
    logs: Sequence[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TestConnecting:
    async def test_connects_to_events_with_app_and_subscribe_all_false(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """The stream opens /ari/events?app=NAME&subscribeAll=false with basic auth."""
        stream = _stream(session, fake_ari.ws_url)
        async with _running(stream):
            conn = await fake_ari.next_connection()
            assert conn.query == {"app": APP, "subscribeAll": "false"}
            await _eventually(lambda: stream.connected)
            assert (stream.connections, stream.reconnects) == (1, 0)

    async def test_events_arrive_in_order(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """Events are queued in exactly the order Asterisk sent them."""
        stream = _stream(session, fake_ari.ws_url)
        async with _running(stream):
            conn = await fake_ari.next_connection()
            for n in range(20):
                await conn.send(_samples.stasis_start(f"1.{n}"))
            events = await _get(stream, 20)
        assert _ids(events) == [f"1.{n}" for n in range(20)]

    async def test_unknown_event_type_is_queued_as_unknown_event(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """An event type we do not model reaches the consumer as UnknownEvent."""
        stream = _stream(session, fake_ari.ws_url)
        async with _running(stream):
            conn = await fake_ari.next_connection()
            await conn.send(_samples.event("ChannelTalkingStarted", channel=_samples.channel()))
            [event] = await _get(stream, 1)
        assert isinstance(event, ari.UnknownEvent)
        assert event.type == "ChannelTalkingStarted"
        assert event.raw["channel"]["id"] == "1732812345.12"


class TestReconnecting:
    async def test_abrupt_drop_reconnects_resyncs_and_keeps_order(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """After an abrupt TCP drop the stream reconnects, calls on_connected, keeps order."""
        stream: EventStream

        async def resync() -> None:
            # Slow on purpose: events of the new connection must wait for it.
            await asyncio.sleep(0.05)
            stream.events.put_nowait(
                ari.UnknownEvent(type="resynced", raw={"n": stream.connections})
            )

        stream = _stream(session, fake_ari.ws_url, on_connected=resync)
        with capture_logs() as logs:
            async with _running(stream):
                conn1 = await fake_ari.next_connection()
                await conn1.send(_samples.stasis_start("1.1"))
                await conn1.send(_samples.stasis_start("1.2"))
                first = await _get(stream, 3)
                conn1.drop()
                conn2 = await fake_ari.next_connection()
                await conn2.send(_samples.stasis_start("1.3"))
                await conn2.send(_samples.stasis_start("1.4"))
                second = await _get(stream, 3)
        assert _ids(first + second) == ["resynced:1", "1.1", "1.2", "resynced:2", "1.3", "1.4"]
        assert (stream.connections, stream.reconnects) == (2, 1)
        assert len(_logs_named(logs, "ari.ws.connected")) == 2
        [disconnected] = _logs_named(logs, "ari.ws.disconnected")
        assert disconnected["reason"].startswith("connection ")
        assert disconnected["log_level"] == "warning"
        assert _logs_named(logs, "ari.ws.connected")[1]["reconnects"] == 1

    async def test_dead_tcp_path_is_detected_by_the_heartbeat(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A server that stops answering pings is dropped within ~1.5 heartbeats and redialled."""
        heartbeat_s = 0.2
        stream = _stream(session, fake_ari.ws_url, heartbeat_s=heartbeat_s)
        with capture_logs() as logs:
            async with _running(stream):
                conn1 = await fake_ari.next_connection()
                await conn1.send(_samples.stasis_start("1.1"))
                await _get(stream, 1)
                conn1.go_silent()
                started = time.monotonic()
                conn2 = await fake_ari.next_connection(timeout_s=3.0)
                elapsed = time.monotonic() - started
                await conn2.send(_samples.stasis_start("1.2"))
                [event] = await _get(stream, 1)
        assert _ids([event]) == ["1.2"]
        # 1.5 heartbeats to detect, plus at most 0.05 s of backoff, plus slack for CI.
        assert elapsed < 1.5 * heartbeat_s + 0.5
        [disconnected] = _logs_named(logs, "ari.ws.disconnected")
        assert "PONG" in disconnected["reason"]
        assert stream.reconnects == 1

    async def test_close_frame_from_asterisk_reconnects(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A clean close from Asterisk (e.g. a module reload) is followed by a reconnect."""
        stream = _stream(session, fake_ari.ws_url)
        with capture_logs() as logs:
            async with _running(stream):
                conn1 = await fake_ari.next_connection()
                await conn1.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
                conn1.done.set()
                await fake_ari.next_connection()
                await _eventually(lambda: stream.reconnects == 1)
        [disconnected] = _logs_named(logs, "ari.ws.disconnected")
        assert "code 1001" in disconnected["reason"]

    async def test_failed_resync_drops_the_connection_and_retries(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """If on_connected raises, the stream closes that connection and connects again."""
        attempts: list[int] = []

        async def resync() -> None:
            attempts.append(stream.connections)
            if len(attempts) == 1:
                raise ari.AriUnavailable("GET", "/applications/siaga112", None, "down")

        stream = _stream(session, fake_ari.ws_url, on_connected=resync)
        with capture_logs() as logs:
            async with _running(stream):
                conn1 = await fake_ari.next_connection()
                conn2 = await fake_ari.next_connection()
                await conn2.send(_samples.stasis_start("1.1"))
                await _get(stream, 1)
                await _eventually(conn1.closed_by_client.is_set)
        assert attempts == [1, 2]
        [disconnected] = _logs_named(logs, "ari.ws.disconnected")
        assert disconnected["reason"].startswith("on_connected failed: AriUnavailable")

    async def test_unreachable_asterisk_is_retried_with_a_clear_log(
        self, session: aiohttp.ClientSession
    ) -> None:
        """While nothing listens, attempts repeat and each log says Asterisk is unreachable."""
        url = f"ws://127.0.0.1:{_free_port()}/ari"
        stream = _stream(session, url)
        with capture_logs() as logs:
            async with _running(stream):
                await _eventually(lambda: len(_logs_named(logs, "ari.ws.connect_failed")) >= 3)
        failures = _logs_named(logs, "ari.ws.connect_failed")
        assert f"Asterisk is unreachable at {url}/events" in failures[0]["reason"]
        assert all(0 < entry["retry_in_s"] <= 0.05 for entry in failures)
        assert stream.connections == 0


class TestAuthFailure:
    async def test_rejected_credentials_are_logged_as_such_and_retried(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A 401 on the upgrade is logged as an auth failure, retried, and hides the password."""
        stream = _stream(session, fake_ari.ws_url, password="wrong-pw-123")
        with capture_logs() as logs:
            async with _running(stream):
                await _eventually(lambda: fake_ari.rejected_upgrades >= 3)
        auth_logs = _logs_named(logs, "ari.ws.auth_failed")
        assert len(auth_logs) >= 3
        assert stream.auth_failures == len(auth_logs)
        assert auth_logs[0]["status"] == 401
        assert auth_logs[0]["log_level"] == "error"
        assert "rejected the ARI credentials" in auth_logs[0]["reason"]
        assert "wrong-pw-123" not in repr(logs)
        assert stream.connections == 0


class TestApplicationReplaced:
    async def test_application_replaced_stops_the_stream_for_good(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """ApplicationReplaced makes run() raise ApplicationReplacedError and never reconnect."""
        stream = _stream(session, fake_ari.ws_url)
        with capture_logs() as logs:
            async with _running(stream) as task:
                conn = await fake_ari.next_connection()
                await conn.send(_samples.stasis_start("1.1"))
                await conn.send(_samples.event("ApplicationReplaced"))
                await conn.send(_samples.stasis_start("1.2"))
                with pytest.raises(ari.ApplicationReplacedError, match="stepping down"):
                    async with asyncio.timeout(2.0):
                        await task
                # Many backoff periods (0.05 s at most) pass without a new connection.
                await asyncio.sleep(0.3)
        assert fake_ari.upgrade_attempts == 1
        assert _ids([stream.events.get_nowait()]) == ["1.1"]
        assert stream.events.empty()
        assert not stream.connected
        [replaced] = _logs_named(logs, "ari.ws.application_replaced")
        assert replaced["log_level"] == "critical"
        assert "another instance took over the Stasis app" in replaced["reason"]
        await _eventually(conn.closed_by_client.is_set)


class TestMalformedEvents:
    async def test_malformed_messages_are_logged_and_skipped(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """Bad JSON and invalid events are logged with an escaped preview and skipped."""
        stream = _stream(session, fake_ari.ws_url)
        bad_event = json.dumps({"type": "StasisStart", "args": [], "application": APP})
        with capture_logs() as logs:
            async with _running(stream):
                conn = await fake_ari.next_connection()
                await conn.send_raw("not json{")
                await conn.send_raw("\x1b[31m{evil\x00" + "x" * 500)
                await conn.send_raw(bad_event)
                await conn.send_raw(b"\xff\xfe")
                await conn.send(_samples.stasis_start("1.1"))
                [event] = await _get(stream, 1)
                assert stream.connected
        assert _ids([event]) == ["1.1"]
        malformed = _logs_named(logs, "ari.event.malformed")
        assert len(malformed) == stream.malformed_events == 4
        assert malformed[0]["payload"] == "'not json{'"
        evil = malformed[1]["payload"]
        assert "\x1b" not in evil
        assert "\x00" not in evil
        assert evil.startswith("'\\x1b[31m{evil\\x00")
        assert evil.endswith("... (511 chars)")
        assert "StasisStart event is malformed" in malformed[2]["error"]
        assert "channel: Field required" in malformed[2]["error"]
        assert malformed[3]["payload"] == "b'\\xff\\xfe'"
        assert stream.reconnects == 0


class TestClose:
    async def test_close_returns_run_and_closes_the_socket(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """close() makes run() return normally and closes the websocket with a close frame."""
        stream = _stream(session, fake_ari.ws_url)
        task = asyncio.create_task(stream.run())
        conn = await fake_ari.next_connection()
        await _eventually(lambda: stream.connected)
        await stream.close()
        assert task.done()
        assert task.result() is None
        assert not stream.connected
        await _eventually(conn.closed_by_client.is_set)

    async def test_close_while_waiting_to_reconnect(self, session: aiohttp.ClientSession) -> None:
        """close() during the reconnect backoff stops run() at once."""
        stream = EventStream(
            session,
            f"ws://127.0.0.1:{_free_port()}/ari",
            USERNAME,
            PASSWORD,
            APP,
            backoff_initial_s=10.0,
            backoff_max_s=10.0,
        )
        with capture_logs() as logs:
            task = asyncio.create_task(stream.run())
            await _eventually(lambda: bool(_logs_named(logs, "ari.ws.connect_failed")))
            started = time.monotonic()
            await stream.close()
        assert time.monotonic() - started < 0.5
        assert task.result() is None

    async def test_close_before_run_makes_run_return(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """A stream closed before it ran returns from run() without connecting."""
        stream = _stream(session, fake_ari.ws_url)
        await stream.close()
        await stream.run()
        assert fake_ari.upgrade_attempts == 0

    async def test_outside_cancellation_propagates(
        self, session: aiohttp.ClientSession, fake_ari: FakeAri
    ) -> None:
        """Cancelling the run() task from outside (not via close()) still cancels it."""
        stream = _stream(session, fake_ari.ws_url)
        task = asyncio.create_task(stream.run())
        await fake_ari.next_connection()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not stream.connected


class TestBackoff:
    def test_delays_double_up_to_the_maximum_with_jitter(self) -> None:
        """Each delay is 50-100 % of min(max, initial * 2**attempt)."""
        backoff = Backoff(0.1, 2.0, random.Random(1))
        delays = [backoff.next_delay() for _ in range(8)]
        nominal = [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]
        for delay, expected in zip(delays, nominal, strict=True):
            assert 0.5 * expected <= delay <= expected

    def test_jitter_spreads_the_delays(self) -> None:
        """Two attempts at the same step do not wait exactly the same time."""
        backoff = Backoff(1.0, 1.0, random.Random(7))
        assert len({backoff.next_delay() for _ in range(10)}) > 1

    def test_reset_starts_from_the_initial_delay(self) -> None:
        """After reset() the next delay is back at the initial step."""
        backoff = Backoff(0.1, 2.0, random.Random(3))
        for _ in range(6):
            backoff.next_delay()
        backoff.reset()
        assert backoff.next_delay() <= 0.1

    def test_invalid_bounds_are_refused(self) -> None:
        """An initial delay above the maximum is a configuration error."""
        with pytest.raises(ari.InvalidArgument):
            Backoff(3.0, 2.0)
