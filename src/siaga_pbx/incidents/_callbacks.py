"""``CallbackRestorer``: at service start, read the pending callbacks back from
PostgreSQL (the record of pending callbacks) and hand them to the core.

Theory of operation
-------------------
- It runs as its own background task, never on the call path: the service
  starts and takes calls at once, PostgreSQL up or down. While PostgreSQL is
  unreachable (or fails in any way) it retries with a growing delay, until
  it has restored once.
- It waits first until the relay has applied the outbox backlog that the
  previous run left (``backlog``, the ops pending when the restorer was
  built): callbacks added or resolved just before a restart, while
  PostgreSQL was slow or down, are then in PostgreSQL when it reads.
- It reads at most ``limit`` callbacks, the most recently abandoned (the
  core's bound, ``core.MAX_PENDING_CALLBACKS``); older ones stay pending in
  PostgreSQL and in ``GET /api/callbacks``.
- ``restore`` hands them over (in the service: ``submit(CallbacksRestored)``,
  through the consumer's inbox). The core keeps only those it does not hold
  and has not seen resolved, so a read that raced a resolution is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from siaga_pbx.core import MAX_PENDING_CALLBACKS, CallbackEntry

from ._relay import OutboxRelay
from ._store import IncidentStore

__all__ = ["CallbackRestorer"]

log = structlog.get_logger(__name__)


class CallbackRestorer:
    """Background task body: ``asyncio.create_task(restorer.run())``; cancel to stop."""

    def __init__(
        self,
        store: IncidentStore,
        relay: OutboxRelay,
        restore: Callable[[tuple[CallbackEntry, ...]], None],
        *,
        limit: int = MAX_PENDING_CALLBACKS,
        poll_s: float = 0.2,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 10.0,
        read_timeout_s: float = 10.0,
    ) -> None:
        self._store = store
        self._relay = relay
        self._restore = restore
        self._limit = limit
        self._poll_s = poll_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._read_timeout_s = read_timeout_s
        # What the previous run left in the outbox: the first ops the relay applies.
        self.backlog = relay.pending
        self.restored: int | None = None  # how many, once done

    def __repr__(self) -> str:
        return f"<CallbackRestorer backlog={self.backlog} restored={self.restored}>"

    def backlog_applied(self) -> bool:
        """Whether every op pending at start has reached PostgreSQL (or was parked)."""
        return self._relay.pending == 0 or self._relay.applied + self._relay.parked >= self.backlog

    async def run(self) -> int:
        """Restore once; return how many callbacks were handed to the core."""
        if not self.backlog_applied():
            log.info("callbacks.restore_waiting_for_outbox", backlog=self.backlog)
        while not self.backlog_applied():  # noqa: ASYNC110 - the relay signals nothing; start-up only
            await asyncio.sleep(self._poll_s)
        delay = self._retry_initial_s
        while True:
            try:
                entries = await asyncio.wait_for(
                    self._store.pending_callback_entries(limit=self._limit),
                    self._read_timeout_s,
                )
                break
            except Exception as exc:  # noqa: BLE001 - down, slow, or not migrated yet: retried
                log.warning(
                    "callbacks.restore_retrying",
                    error=f"{type(exc).__name__}: {exc}"[:300],
                    retry_in_s=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        self._restore(tuple(entries))
        self.restored = len(entries)
        log.info("callbacks.restored", count=len(entries))
        return len(entries)
