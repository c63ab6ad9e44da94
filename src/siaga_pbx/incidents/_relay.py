"""``OutboxRelay``: drains the local outbox to PostgreSQL, in order, exactly once.

Theory of operation
-------------------
- Ops are applied strictly in ``seq`` order, each in its own PostgreSQL
  transaction, which also inserts ``applied_ops(outbox_id, seq)``. If that row
  already exists the op was applied before (we crashed after COMMIT but before
  the local ack), so the effect is skipped and only the ack is redone.
  Apply-then-ack plus that marker gives exactly-once effects from an
  at-least-once delivery.
- Local acks happen after the PostgreSQL commit, batched: losing an ack only
  costs a harmless replay, never an op.
- Errors fall in two classes:
  * transient (PostgreSQL down, slow, restarting, too many connections,
    serialization failures, a missing table before migrations ran, and
    anything unexpected): keep every op, drop the connection, back off
    (``backoff_initial`` doubling up to ``backoff_max``) and retry the SAME op.
    Delay is acceptable; loss is not.
  * permanent, i.e. about this op's data (SQLSTATE class 22 "data exception",
    class 23 "integrity constraint violation", or an op the decoder cannot
    rebuild): retrying would fail forever and block every later op - every
    later call's record - behind it. Such an op is moved to the outbox's local
    ``dead_letter`` table with its error, logged at error level, and the relay
    continues. Nothing is dropped: a human can inspect and replay it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import structlog

from ._apply import apply_op
from ._outbox import Outbox, OutboxEntry

__all__ = ["OutboxRelay", "is_permanent_error"]

log = structlog.get_logger(__name__)


# The exactly-once guard: true the first time an op is applied, NULL after.
_MARK_APPLIED = (
    "INSERT INTO applied_ops (outbox_id, seq, kind) VALUES ($1, $2, $3)"
    " ON CONFLICT DO NOTHING RETURNING true"
)


def is_permanent_error(exc: BaseException) -> bool:
    """True if retrying the same op can only fail the same way."""
    return isinstance(
        exc,
        asyncpg.exceptions.DataError
        | asyncpg.exceptions.IntegrityConstraintViolationError
        # client-side: asyncpg's argument-encoding DataError is a ValueError,
        # and so are out-of-range times.
        | ValueError
        | OverflowError,
    )


class OutboxRelay:
    """Background task body: ``asyncio.create_task(relay.run())``; cancel to stop.

    ``after_apply`` is a test seam, called with ``seq`` after an op's
    PostgreSQL transaction committed and before its local ack; raising from it
    simulates a crash at the worst moment.
    """

    def __init__(
        self,
        outbox: Outbox,
        dsn: str,
        *,
        repeat_window_s: float = 3600.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        batch_size: int = 100,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        idle_poll_s: float = 1.0,
        linger_s: float = 0.05,
        after_apply: Callable[[int], None] | None = None,
    ) -> None:
        if not 0 < backoff_initial <= backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")
        self.outbox = outbox
        self.dsn = dsn
        self.repeat_window_s = repeat_window_s
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.batch_size = batch_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.idle_poll_s = idle_poll_s
        self.linger_s = linger_s
        self._after_apply = after_apply
        self._conn: asyncpg.Connection | None = None
        self.applied = 0  # ops applied (or found already applied) since start
        self.parked = 0  # ops moved to the dead-letter table since start
        self.failures = 0  # transient failures since start
        self.last_error = ""

    def __repr__(self) -> str:
        return (
            f"<OutboxRelay pending={self.pending} applied={self.applied} parked={self.parked}"
            f" connected={self._conn is not None}>"
        )

    @property
    def pending(self) -> int:
        """Ops waiting to reach PostgreSQL (metric hook)."""
        return self.outbox.pending

    async def run(self) -> None:
        """Drain forever: replays whatever the outbox holds at start, then follows it."""
        delay = self.backoff_initial
        try:
            while True:
                await self.outbox.wait_for_ops(self.idle_poll_s)
                if self.outbox.pending == 0:
                    continue
                if self.outbox.pending < self.batch_size and self.linger_s > 0:
                    # Ops come a few per call event: waiting a moment lets one
                    # transaction (and one local ack) carry many of them.
                    await asyncio.sleep(self.linger_s)
                try:
                    await self.drain()
                except Exception as exc:  # noqa: BLE001 - every failure here is retried; see module doc
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "outbox_relay_retrying",
                        error=self.last_error,
                        retry_in_s=delay,
                        pending=self.outbox.pending,
                    )
                    await self._drop_connection()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                else:
                    delay = self.backoff_initial
        finally:
            await self._drop_connection()

    async def drain(self) -> int:
        """Apply every op pending now; return how many were applied.

        Raises on the first transient error (the op stays queued).
        """
        total = 0
        while True:
            entries = await self.outbox.peek(self.batch_size)
            if not entries:
                return total
            total += await self._apply_batch(entries)

    async def close(self) -> None:
        """Close the PostgreSQL connection (``run`` does this when cancelled)."""
        await self._drop_connection()

    async def _apply_batch(self, entries: list[OutboxEntry]) -> int:
        """Apply ``entries`` in one transaction (one commit for the batch).

        If one op in it is permanently bad, the transaction rolls back as a
        whole and the batch is applied again op by op, each in its own
        transaction, so that only the bad op is parked. A transient error
        raises: nothing of the batch is acknowledged, all of it is retried.
        """
        if any(entry.op is None for entry in entries):
            return await self._apply_one_by_one(entries)
        conn = await self._connection()
        repeats: list[OutboxEntry] = []
        try:
            async with conn.transaction():
                for entry in entries:
                    if not await self._apply_once(conn, entry):
                        repeats.append(entry)
        except Exception as exc:
            if not is_permanent_error(exc):
                raise
            log.warning("outbox_batch_split", ops=len(entries), error=f"{type(exc).__name__}")
            return await self._apply_one_by_one(entries)
        for entry in repeats:
            with structlog.contextvars.bound_contextvars(
                call_id=entry.op.call_id if entry.op else None, op_seq=entry.seq
            ):
                log.info("outbox_op_already_applied")
        seqs = [entry.seq for entry in entries]
        if self._after_apply is not None:
            for seq in seqs:
                self._after_apply(seq)
        await self.outbox.ack(seqs)
        self.applied += len(seqs)
        return len(seqs)

    async def _apply_once(self, conn: asyncpg.Connection, entry: OutboxEntry) -> bool:
        """Mark ``entry`` applied and apply it, inside the caller's transaction;
        False (and nothing done) when an earlier run applied it already."""
        assert entry.op is not None  # undecodable ops are parked, never applied
        marked = await conn.fetchval(_MARK_APPLIED, self.outbox.instance_id, entry.seq, entry.kind)
        if not marked:
            return False
        await apply_op(conn, entry.op, repeat_window_s=self.repeat_window_s)
        return True

    async def _apply_one_by_one(self, entries: list[OutboxEntry]) -> int:
        conn = await self._connection()
        done: list[int] = []
        applied = 0
        try:
            for entry in entries:
                if entry.op is None:
                    await self.outbox.ack(done)
                    done = []
                    await self._park(entry, entry.error)
                    continue
                with structlog.contextvars.bound_contextvars(
                    call_id=entry.op.call_id, op_seq=entry.seq, op_kind=entry.kind
                ):
                    try:
                        async with conn.transaction():
                            first_time = await self._apply_once(conn, entry)
                    except Exception as exc:
                        if not is_permanent_error(exc):
                            raise
                        await self.outbox.ack(done)
                        done = []
                        await self._park(entry, f"{type(exc).__name__}: {exc}")
                        continue
                    if not first_time:
                        log.info("outbox_op_already_applied")
                if self._after_apply is not None:
                    self._after_apply(entry.seq)
                done.append(entry.seq)
                applied += 1
                self.applied += 1
        finally:
            await self.outbox.ack(done)
        return applied

    async def _park(self, entry: OutboxEntry, error: str) -> None:
        log.error(
            "outbox_op_dead_lettered",
            op_seq=entry.seq,
            op_kind=entry.kind,
            error=error,
            outbox=str(self.outbox.path),
        )
        await self.outbox.park(entry.seq, error)
        self.parked += 1

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self.dsn, timeout=self.connect_timeout, command_timeout=self.command_timeout
            )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            # terminate(), not close(): a wedged server must not hang us here.
            conn.terminate()
