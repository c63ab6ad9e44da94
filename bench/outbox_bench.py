"""Micro-benchmark of the durable outbox's group commit (not a test, not part of ``make bench``).

``python -m bench.outbox_bench [--ops N] [--writers W] [--dir DIR]`` appends N ops to a
fresh outbox file three ways and prints appends/s and how many transactions (fsyncs)
they took:

- sequential: one writer awaiting each append (one commit per op);
- writers:    W tasks, each appending its share one after the other;
- gather:     all N appends started at once (``asyncio.gather``).

The file lives in a temporary directory under ``--dir`` (default: the system temp
dir); put it on the disk the service uses, since the fsync is what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from siaga_pbx.incidents import AppendTimeline, Outbox


def _op(i: int) -> AppendTimeline:
    return AppendTimeline(f"call-{i % 50}", "queued", 1.7e9 + i, {"i": i})


async def _sequential(outbox: Outbox, ops: int, latencies: list[float]) -> None:
    for i in range(ops):
        started = time.perf_counter()
        await outbox.append(_op(i))
        latencies.append(time.perf_counter() - started)


async def _writers(outbox: Outbox, ops: int, writers: int, latencies: list[float]) -> None:
    async def writer(w: int) -> None:
        for i in range(w, ops, writers):
            started = time.perf_counter()
            await outbox.append(_op(i))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(writer(w) for w in range(writers)))


async def _gather(outbox: Outbox, ops: int, latencies: list[float]) -> None:
    async def one(i: int) -> None:
        started = time.perf_counter()
        await outbox.append(_op(i))
        latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(ops)))


async def _measure(
    name: str, directory: Path, ops: int, run: Callable[[Outbox, list[float]], Awaitable[None]]
) -> None:
    latencies: list[float] = []
    async with Outbox(directory / f"{name}.sqlite3") as outbox:
        await outbox.open()
        started = time.perf_counter()
        await run(outbox, latencies)
        elapsed = time.perf_counter() - started
        commits = outbox.append_commits
        assert outbox.pending == ops
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"{name:<12} {ops:>6} ops  {ops / elapsed:>9.0f} appends/s  {commits:>6} commits"
        f"  {ops / commits:>7.1f} ops/commit  append p50 {statistics.median(ms):>7.2f} ms"
        f"  p99 {p99:>7.2f} ms"
    )


async def _main(ops: int, writers: int, base: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="outbox-bench-", dir=base) as tmp:
        directory = Path(tmp)
        print(f"outbox file in {directory} (WAL, synchronous=FULL)")
        await _measure("sequential", directory, ops, lambda o, lat: _sequential(o, ops, lat))
        await _measure(
            f"writers={writers}", directory, ops, lambda o, lat: _writers(o, ops, writers, lat)
        )
        await _measure("gather", directory, ops, lambda o, lat: _gather(o, ops, lat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--ops", type=int, default=2000, help="appends per mode (default 2000)")
    parser.add_argument("--writers", type=int, default=50, help="concurrent writers (default 50)")
    parser.add_argument("--dir", default=None, help="where to put the temporary outbox file")
    args = parser.parse_args()
    asyncio.run(_main(args.ops, args.writers, args.dir))


if __name__ == "__main__":
    main()
