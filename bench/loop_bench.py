"""One ARI-shaped request round trip on the standard asyncio loop and on uvloop.

``python -m bench.loop_bench [--requests N]`` starts a small aiohttp server in a child process
(it answers every request with a channel-sized JSON body), then sends the service's own
originate request (``AriRest.request``, the same query string the service sends) N times in a
row, on each loop in turn, twice. It prints, per request, the client's CPU time and the wall
time of the round trip. The server's work is in the other process, so the CPU figure is the
client's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import aiohttp
import uvloop

from siaga_pbx import ari

_PORT = 18999
_SERVER = f"""
from aiohttp import web
async def answer(request):
    return web.json_response({{"id": "siaga-offer-s112-bench-1.2-1", "state": "Down"}})
app = web.Application()
app.router.add_route("*", "/{{tail:.*}}", answer)
web.run_app(app, host="127.0.0.1", port={_PORT}, print=None)
"""
_ORIGINATE: dict[str, str | int] = {
    "endpoint": "PJSIP/bench-h1",
    "channelId": "siaga-offer-s112-bench-1.2-1",
    "app": "siaga-112",
    "appArgs": "offer,s112-bench-1.2",
    "timeout": 20,
    "callerId": '"0811" <0811>',
}


async def _round_trips(n: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        rest = ari.AriRest(session, f"http://127.0.0.1:{_PORT}/ari", "u", "p")
        for _ in range(200):  # warm up: connection, caches
            await rest.request("POST", "/channels", params=_ORIGINATE)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(n):
            await rest.request("POST", "/channels", params=_ORIGINATE)
        return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def _wait_for_server(timeout_s: float = 10.0) -> None:
    async def probe() -> None:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{_PORT}/"):
            return

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(probe())
        except aiohttp.ClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    server = subprocess.Popen([sys.executable, "-c", _SERVER])  # noqa: S603 - our own code
    try:
        _wait_for_server()
        runners: dict[str, Callable[[Coroutine[Any, Any, tuple[float, float]]], Any]] = {
            "asyncio": asyncio.run,
            "uvloop": uvloop.run,
        }
        print(f"{args.requests} requests per run; client CPU and wall time per round trip")
        for _ in range(2):
            for name, run in runners.items():
                cpu, wall = run(_round_trips(args.requests))
                print(f"  {name:8s} cpu {cpu * 1e6:6.0f} us   wall {wall * 1e6:6.0f} us")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
