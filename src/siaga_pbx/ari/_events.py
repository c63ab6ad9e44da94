"""The event half of our ARI client: one websocket, one reader task, one queue.

Theory of operation
-------------------
``EventStream.run()`` is the only reader. It connects to
``<ws_url_base>/events?app=NAME&subscribeAll=false``, and then, for every text
frame, parses it (``parse_event``, no I/O) and puts the event on
``EventStream.events``, an ``asyncio.Queue``. One reader and one FIFO queue
keep events in Asterisk's order across reconnects; the service drains the queue
with a single consumer task, so it needs no locks.

What happens when things go wrong:

- Connection lost (close frame, reset, or no PONG to aiohttp's heartbeat ping
  within ``heartbeat_s / 2`` after ``heartbeat_s`` of silence, so a dead TCP path
  is noticed within 1.5 x ``heartbeat_s``): log ``ari.ws.disconnected`` with the
  reason, wait (0.1 s doubling to 2 s, with jitter), connect again. Asterisk
  drops the events of that gap for good.
- Every successful (re)connect awaits ``on_connected()`` *before* reading any
  event of the new connection, so the service can resynchronise from
  ``GET /applications/{app}``; whatever it does is ordered before the new
  connection's events. If ``on_connected`` raises, the connection is dropped and
  retried, because state we could not resynchronise is state we cannot trust.
- A malformed event is logged (``ari.event.malformed``, with a truncated,
  escaped preview) and skipped; it never stops the reader.
- 401/403 on the upgrade: logged as ``ari.ws.auth_failed`` (a configuration
  problem, not a network one) and retried with the same backoff.
- ``ApplicationReplaced``: another process registered our Stasis app and now
  gets our calls. We must not fight back: log it, close, and raise
  ``ApplicationReplacedError`` from ``run()``. Never reconnected.
- ``close()`` cancels the reader; ``run()`` then returns normally.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog
from yarl import URL

from ._errors import ApplicationReplacedError, InvalidArgument, MalformedEvent
from ._models import ApplicationReplaced, Event, escape_preview, parse_event
from ._rest import check_id

__all__ = ["Backoff", "EventStream", "OnConnected"]

OnConnected = Callable[[], Awaitable[None]]


class Backoff:
    """Reconnect delays: ``initial_s`` doubling up to ``max_s``, each scaled by 50-100 %."""

    def __init__(
        self, initial_s: float = 0.1, max_s: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise InvalidArgument(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter, not crypto
        self._attempt = 0

    def __repr__(self) -> str:
        return f"Backoff(attempt={self._attempt}, initial_s={self.initial_s}, max_s={self.max_s})"

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the nominal delay."""
        nominal = min(self.max_s, self.initial_s * 2.0 ** min(self._attempt, 32))
        self._attempt += 1
        # Jitter keeps several services (or a restarted one) from reconnecting in lockstep.
        return nominal * (0.5 + 0.5 * self._rng.random())

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a connection that worked)."""
        self._attempt = 0


class EventStream:
    """Asterisk's ARI event websocket for one Stasis app, as an ordered queue of events.

    Usage::

        stream = EventStream(session, "ws://127.0.0.1:8088/ari", user, pw, "siaga112",
                             on_connected=resync)
        reader = asyncio.create_task(stream.run())
        while True:
            event = await stream.events.get()   # one consumer, events in order
            ...
        await stream.close()

    ``run()`` returns after ``close()`` and raises ``ApplicationReplacedError``
    when another instance takes the app over. It may be called once.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        ws_url_base: str,
        username: str,
        password: str,
        app: str,
        *,
        on_connected: OnConnected | None = None,
        events: asyncio.Queue[Event] | None = None,
        heartbeat_s: float = 5.0,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 2.0,
        connect_timeout_s: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        base = URL(ws_url_base)
        if base.scheme not in ("ws", "wss") or not base.host:
            raise InvalidArgument(f"ws_url_base must be ws(s)://host:port/ari, got {ws_url_base!r}")
        if base.user is not None or base.password is not None:
            raise InvalidArgument("pass ARI credentials as arguments, not inside the URL")
        if heartbeat_s <= 0 or connect_timeout_s <= 0:
            raise InvalidArgument("heartbeat_s and connect_timeout_s must be positive")
        self._session = session
        self._url = URL(str(base).rstrip("/") + "/events")
        self._username = username
        self._headers = {"Authorization": aiohttp.encode_basic_auth(username, password)}
        self._app = check_id("app", app)
        self._on_connected = on_connected
        self._heartbeat_s = heartbeat_s
        self._connect_timeout_s = connect_timeout_s
        self._backoff = Backoff(backoff_initial_s, backoff_max_s, rng)
        self._ws: aiohttp.ClientWebSocketResponse[Any] | None = None
        self._task: asyncio.Task[Any] | None = None
        self._closing = False
        #: Events in Asterisk's order; drain with exactly one consumer.
        self.events: asyncio.Queue[Event] = events if events is not None else asyncio.Queue()
        #: Successful connections so far, and how many of them were reconnections.
        self.connections = 0
        self.reconnects = 0
        #: Upgrades refused with 401/403, and events skipped as malformed.
        self.auth_failures = 0
        self.malformed_events = 0

    def __repr__(self) -> str:
        state = "closed" if self._closing else ("connected" if self.connected else "connecting")
        return (
            f"EventStream(app={self._app!r}, url={str(self._url)!r}, state={state}, "
            f"reconnects={self.reconnects})"
        )

    @property
    def app(self) -> str:
        return self._app

    @property
    def connected(self) -> bool:
        """True while a websocket is open (events may still be lost just before a drop)."""
        return self._ws is not None and not self._ws.closed

    def _log(self) -> Any:
        # A fresh bound logger each time, so that logging configured (or captured
        # in tests) after this object was built still applies.
        return structlog.get_logger("siaga_pbx.ari.events").bind(app=self._app, url=str(self._url))

    # --- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Read events until ``close()``; raise ``ApplicationReplacedError`` if taken over."""
        if self._task is not None:
            raise RuntimeError("EventStream.run() may be called only once")
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        try:
            while not self._closing:
                delay = await self._one_connection()
                if not self._closing:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            # Our own close() cancelled us exactly once: a clean stop. Any other
            # cancellation (or one on top of ours) belongs to the caller.
            if self._closing and task.uncancel() == 0:
                return
            raise
        except ApplicationReplacedError:
            self._closing = True
            raise

    async def close(self) -> None:
        """Stop reading and close the websocket; ``run()`` then returns."""
        self._closing = True
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        await asyncio.wait([task])

    # --- one connection ----------------------------------------------------------

    async def _one_connection(self) -> float:
        """Connect, resync, read until the connection ends; return the delay to wait."""
        log = self._log()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await self._session.ws_connect(
                    self._url,
                    params={"app": self._app, "subscribeAll": "false"},
                    headers=self._headers,
                    heartbeat=self._heartbeat_s,
                    autoping=True,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
                )
        except aiohttp.WSServerHandshakeError as exc:
            delay = self._backoff.next_delay()
            if exc.status in (401, 403):
                self.auth_failures += 1
                log.error(  # noqa: TRY400 - a 401's traceback says nothing; the reason does
                    "ari.ws.auth_failed",
                    status=exc.status,
                    username=self._username,
                    reason=f"Asterisk rejected the ARI credentials of user {self._username!r}",
                    retry_in_s=round(delay, 3),
                )
            else:
                log.warning(
                    "ari.ws.connect_failed",
                    status=exc.status,
                    reason=f"websocket upgrade refused: HTTP {exc.status} {exc.message}",
                    retry_in_s=round(delay, 3),
                )
            return delay
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            delay = self._backoff.next_delay()
            log.warning(
                "ari.ws.connect_failed",
                reason=f"Asterisk is unreachable at {self._url}: {type(exc).__name__}: {exc}",
                retry_in_s=round(delay, 3),
            )
            return delay

        self._ws = ws
        try:
            self.connections += 1
            if self.connections > 1:
                self.reconnects += 1
            log.info("ari.ws.connected", reconnects=self.reconnects)
            if self._on_connected is not None:
                try:
                    await self._on_connected()
                except Exception as exc:  # any resync failure means: reconnect and retry
                    delay = self._backoff.next_delay()
                    log.exception(
                        "ari.ws.disconnected",
                        reason=f"on_connected failed: {type(exc).__name__}: {exc}",
                        retry_in_s=round(delay, 3),
                    )
                    return delay
            self._backoff.reset()
            reason = await self._pump(ws)
            delay = self._backoff.next_delay()
            log.warning("ari.ws.disconnected", reason=reason, retry_in_s=round(delay, 3))
            return delay
        finally:
            self._ws = None
            await ws.close()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse[Any]) -> str:
        """Queue every event until the connection ends; return why it ended."""
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                await self._dispatch(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                return f"connection error: {type(msg.data).__name__}: {msg.data}"
            else:  # CLOSE, CLOSING, CLOSED: aiohttp has answered/finished the close
                return f"connection closed (code {ws.close_code})"

    async def _dispatch(self, data: str | bytes) -> None:
        try:
            event = parse_event(data)
        except MalformedEvent as exc:
            self.malformed_events += 1
            self._log().warning("ari.event.malformed", error=str(exc), payload=escape_preview(data))
            return
        if isinstance(event, ApplicationReplaced):
            self._log().critical(
                "ari.ws.application_replaced",
                reason="another instance took over the Stasis app; stepping down",
            )
            raise ApplicationReplacedError(self._app)
        # The default queue is unbounded, so this never waits. With a bounded queue
        # a slow consumer pushes back on the socket instead of losing events, but
        # if it stays full longer than the heartbeat the PONGs are not read either
        # and the connection is dropped as dead: keep the default for ARI.
        await self.events.put(event)
