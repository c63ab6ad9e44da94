"""A scripted, in-process fake of Asterisk's ARI (REST + event websocket).

It listens on 127.0.0.1 on a random port. Tests script it:

- REST: ``reply(method, path, status, body)`` sets the answer for one route;
  unscripted routes answer 404 like Asterisk does. A test that needs state
  (objects created by one request, read by the next) sets ``handler``: it sees
  every request first and answers ``(status, body)``, or ``None`` to fall
  through to the scripted replies. Every request is recorded in
  ``requests`` (method, path, decoded query, raw query string, JSON body).
- Websocket: each accepted upgrade becomes a ``FakeWsConnection`` on the
  ``connections`` queue. A test sends events on it, sends raw frames, drops the
  TCP connection abruptly, or makes it stop answering pings (a dead path).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

USERNAME = "siaga"
PASSWORD = "s3cret-ari-pw"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    body: Any
    authorized: bool


@dataclass
class FakeWsConnection:
    """One accepted websocket; the server side of one ``EventStream`` connection."""

    ws: web.WebSocketResponse
    request: web.Request
    query: dict[str, str]
    silent: bool = False
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(event))

    async def send_raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    def drop(self) -> None:
        """Abort the TCP connection: no close frame, an RST to the client."""
        transport = self.request.transport
        if transport is not None:
            transport.abort()
        self.done.set()

    def go_silent(self) -> None:
        """Keep the TCP connection open but never answer a ping again."""
        self.silent = True

    async def _read_loop(self) -> None:
        async for msg in self.ws:  # ends on the client's close frame
            if msg.type is aiohttp.WSMsgType.PING and not self.silent:
                await self.ws.pong(msg.data)
        self.closed_by_client.set()
        self.done.set()


class FakeAri:
    """The fake server; use as ``async with FakeAri() as ari``."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.connections: asyncio.Queue[FakeWsConnection] = asyncio.Queue()
        self.all_connections: list[FakeWsConnection] = []
        self.upgrade_attempts = 0
        self.rejected_upgrades = 0
        self.delay_s = 0.0
        self._replies: dict[tuple[str, str], tuple[int, Any]] = {}
        self.handler: Callable[[RecordedRequest], tuple[int, Any] | None] | None = None
        self._expected_auth = aiohttp.encode_basic_auth(USERNAME, PASSWORD)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ari"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ari"

    def reply(self, method: str, path: str, status: int, body: Any = None) -> None:
        """Answer ``method /ari<path>`` with ``status`` and ``body`` (JSON, bytes or None)."""
        self._replies[(method.upper(), path)] = (status, body)

    async def next_connection(self, timeout_s: float = 2.0) -> FakeWsConnection:
        async with asyncio.timeout(timeout_s):
            return await self.connections.get()

    async def __aenter__(self) -> FakeAri:
        app = web.Application()
        app.router.add_get("/ari/events", self._events)
        app.router.add_route("*", "/ari/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for conn in self.all_connections:
            if not conn.done.is_set():
                conn.drop()
        assert self._runner is not None
        await self._runner.cleanup()

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path.removeprefix("/ari"),
                query=dict(request.query),
                raw_query=request.rel_url.raw_query_string,
                body=json.loads(raw) if raw else None,
                authorized=request.headers.get("Authorization") == self._expected_auth,
            )
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if not self.requests[-1].authorized:
            return web.json_response({"message": "Authentication required"}, status=401)
        handled = self.handler(self.requests[-1]) if self.handler is not None else None
        status, body = handled or self._replies.get(
            (request.method, self.requests[-1].path), (404, {"message": "Resource not found"})
        )
        if body is None:
            return web.Response(status=status)
        if isinstance(body, bytes):
            return web.Response(status=status, body=body, content_type="text/plain")
        return web.json_response(body, status=status)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.upgrade_attempts += 1
        if request.headers.get("Authorization") != self._expected_auth:
            self.rejected_upgrades += 1
            return web.json_response({"message": "Authentication required"}, status=401)
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        conn = FakeWsConnection(ws=ws, request=request, query=dict(request.query))
        self.all_connections.append(conn)
        self.connections.put_nowait(conn)
        reader = asyncio.create_task(conn._read_loop())
        try:
            await conn.done.wait()
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        return ws
