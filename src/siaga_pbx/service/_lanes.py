"""Per-call lanes: ARI commands run in order for each call, concurrently across calls.

The consumer never waits for Asterisk. It hands each telephony command to the
lane of the call it belongs to and moves on to the next event. Within a lane
commands run strictly in the order the core issued them (answer before bridge,
bridge before record), so one call's sequence is exactly as before; across
lanes they overlap, so a slow or stuck REST call (up to its timeout) delays
only its own call, never every caller in the centre.

A lane exists while it has work and disappears when it drains. The lane task
itself never touches the core: what it learns (a failure, a finished command)
goes back through the consumer's inbox like any other event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lanes(Generic[T]):
    def __init__(self, run: Callable[[T], Awaitable[None]]) -> None:
        self._run = run
        self._queues: dict[str, asyncio.Queue[T]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"<Lanes busy={len(self._tasks)}>"

    def __len__(self) -> int:
        return len(self._tasks)

    def submit(self, key: str, item: T) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = asyncio.Queue()
            self._tasks[key] = asyncio.create_task(self._drain(key, queue), name=f"lane-{key}")
        queue.put_nowait(item)

    async def _drain(self, key: str, queue: asyncio.Queue[T]) -> None:
        try:
            while True:
                try:
                    item = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await self._run(item)  # must not raise: failures are reported by ``run``
        finally:
            self._queues.pop(key, None)
            self._tasks.pop(key, None)

    async def idle(self) -> None:
        """Wait until every lane has drained (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
