"""The durable local outbox: a SQLite file in WAL mode with ``synchronous=FULL``.

Theory of operation
-------------------
The service must never wait for PostgreSQL while a caller is on the line, and
must never lose a record. So every op is first written to a local SQLite file;
``append`` returns only after the op's transaction is committed and fsynced
(WAL + ``synchronous=FULL``), so a crash or power cut right after ``append``
still finds the op on restart. ``OutboxRelay`` later drains the ops to
PostgreSQL in order.

- ``seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``: SQLite then guarantees a
  sequence number is never reused, even after every row was deleted. This
  matters: PostgreSQL remembers applied ops by ``(instance_id, seq)``, so a
  reused ``seq`` would make a new op look already applied and be skipped.
- ``instance_id`` (a UUID) is made once when the file is created and lives in
  it; together with ``seq`` it names an op globally.
- Ops that can never be applied are moved to ``dead_letter`` in the same local
  transaction that removes them from ``ops``: nothing is ever simply dropped.

Threading: sqlite3 calls block on disk, so they all run on ONE dedicated
worker thread that owns the connection. The event loop only awaits futures.
Because the executor has a single worker, jobs run in submission order.

Group commit: the fsync of each commit is what an append costs, so appends
share commits. ``append`` puts its op, with an asyncio future, at the tail of
an in-memory queue - synchronously, so the queue holds ops in the order
``append`` was called - and makes sure one flush job is submitted to the
worker. When the flush job starts it takes every op queued by then (at most
``max_batch``) and writes them in ONE ``BEGIN IMMEDIATE`` ... ``COMMIT``
transaction; ops appended while that commit is running wait for the next
flush job, and so on. With one writer at a time the queue holds a single op
and this is exactly the old one-transaction-per-op path; under concurrency one
fsync serves a whole batch.

Durability is unchanged: a future is resolved only after the COMMIT of the
transaction holding its op has returned, which with ``synchronous=FULL``
means the WAL was fsynced. A batch is one transaction, so it is committed
whole or not at all: if it fails it is rolled back and every ``append`` of
that batch raises the error; none of its ops is on disk and the next batch
starts afresh. Ops leave the queue in FIFO order and only one flush job runs
at a time (on the single worker), so ``seq`` increases in ``append`` call
order across batches too. The worker never touches asyncio objects: it hands
each batch's outcome to the loop with one ``call_soon_threadsafe``, and that
callback resolves the futures and updates ``pending`` / ``on_pending`` and
the relay's wake-up event once per batch. ``close()`` writes whatever is
still queued before it closes the connection. An op whose ``append`` was
cancelled while queued is still written (never lost); its caller just does
not learn its ``seq``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ._ops import Op, decode_op, encode_op

__all__ = ["DeadLetter", "Outbox", "OutboxEntry"]

_T = TypeVar("_T")

#: Default cap on the ops written by one group commit (see ``Outbox(max_batch=...)``).
MAX_BATCH = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ops (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    appended_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    appended_at REAL NOT NULL,
    error TEXT NOT NULL,
    parked_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One pending op. ``op`` is None when the stored row cannot be decoded
    (then ``error`` says why); the relay parks such entries."""

    seq: int
    kind: str
    op: Op | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class _Queued:
    """One op waiting for a group commit, and the future its ``append`` awaits."""

    kind: str
    payload: str
    future: asyncio.Future[int]
    loop: asyncio.AbstractEventLoop


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An op PostgreSQL (or the decoder) rejected permanently, kept with its error."""

    seq: int
    kind: str
    payload: str
    error: str
    parked_at: float


class Outbox:
    """Durable, ordered local queue of ops. ``await append(op)`` is durable on return.

    ``pending`` is the number of ops not yet applied (a metric); ``on_pending``
    is called with the new value whenever it changes. Concurrent appends are
    group-committed, at most ``max_batch`` ops per transaction;
    ``append_commits`` counts those transactions.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        on_pending: Callable[[int], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.path = Path(path)
        self.max_batch = max_batch
        self.append_commits = 0
        self._on_pending = on_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._conn: sqlite3.Connection | None = None
        self._instance_id = ""
        self._pending = 0
        self._opened = False
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._owner_thread: int | None = None
        # Ops waiting for a group commit, in append order. Filled by the loop,
        # drained by the worker; the lock guards the queue and the flag.
        self._queue: deque[_Queued] = deque()
        self._queue_lock = threading.Lock()
        self._flush_submitted = False

    def __repr__(self) -> str:
        return f"<Outbox {self.path} instance={self._instance_id or '?'} pending={self._pending}>"

    # ---- lifecycle ---------------------------------------------------------

    @property
    def instance_id(self) -> str:
        """The UUID that, with ``seq``, names each op of this outbox file."""
        if not self._opened:
            raise RuntimeError("outbox not opened yet: await open() first")
        return self._instance_id

    @property
    def pending(self) -> int:
        """Ops appended and not yet applied (nor parked)."""
        return self._pending

    async def open(self) -> None:
        """Create or open the file; idempotent. Called implicitly by ``append``."""
        async with self._open_lock:
            if self._closed:
                raise RuntimeError("outbox is closed")
            if self._opened:
                return
            self._instance_id, pending = await self._run(self._open_sync)
            self._opened = True
            self._set_pending(pending)
            if pending:
                self._changed.set()

    async def close(self) -> None:
        """Write every op already appended, close the file and stop the worker
        thread. Pending ops stay on disk; ``append`` raises from now on."""
        if self._closed:
            return
        self._closed = True
        if self._opened:
            await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- the queue ---------------------------------------------------------

    async def append(self, op: Op) -> int:
        """Store ``op`` durably; return its ``seq``. Never touches the network.

        Returns once the transaction holding the op is committed and fsynced;
        ops appended concurrently share that transaction (group commit)."""
        kind, payload = encode_op(op)
        # Every append goes through open(): its lock is FIFO, so appends that
        # arrive while the file is being opened keep their order.
        await self.open()
        if self._closed:
            raise RuntimeError("outbox is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        # No await between open() and here: the queue order is the call order.
        with self._queue_lock:
            self._queue.append(_Queued(kind, payload, future, loop))
            submit = not self._flush_submitted
            self._flush_submitted = True
        if submit:
            # Cannot fail: close() marks the outbox closed (checked above, on
            # this thread) before it shuts the executor down.
            self._executor.submit(self._flush_sync)
        return await future

    async def peek(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest ``limit`` pending ops, in order. Does not remove them."""
        await self.open()
        rows = await self._run(self._peek_sync, limit)
        entries: list[OutboxEntry] = []
        for seq, kind, payload in rows:
            try:
                entries.append(OutboxEntry(seq, kind, decode_op(kind, payload)))
            except ValueError as exc:
                entries.append(OutboxEntry(seq, kind, None, str(exc)))
        return entries

    async def ack(self, seqs: list[int]) -> None:
        """Forget ops that PostgreSQL has applied."""
        if not seqs:
            return
        await self.open()
        removed = await self._run(self._ack_sync, seqs)
        self._set_pending(self._pending - removed)

    async def park(self, seq: int, error: str) -> None:
        """Move one op to the dead-letter table with ``error`` (one transaction)."""
        await self.open()
        moved = await self._run(self._park_sync, seq, error)
        self._set_pending(self._pending - moved)

    async def dead_letters(self) -> list[DeadLetter]:
        """Every parked op, oldest first."""
        await self.open()
        rows = await self._run(self._dead_letters_sync)
        return [DeadLetter(*row) for row in rows]

    async def wait_for_ops(self, max_wait_s: float) -> None:
        """Return when ops may be pending (or after ``max_wait_s`` seconds)."""
        if self._pending:
            return
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max_wait_s)

    # ---- worker-thread side ------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        # The connection belongs to the worker thread; nothing else may use it.
        assert self._conn is not None, "outbox not opened"
        assert self._owner_thread == threading.get_ident(), "outbox used off its thread"
        return self._conn

    def _open_sync(self) -> tuple[str, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self._conn = conn
        self._owner_thread = threading.get_ident()
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"outbox {self.path}: cannot enable WAL (got {mode})")
        conn.execute("PRAGMA synchronous=FULL")  # fsync on every commit
        for stmt in _SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT value FROM meta WHERE key = 'instance_id'").fetchone()
        if row is None:
            instance_id = str(uuid.uuid4())
            conn.execute("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (instance_id,))
        else:
            instance_id = str(row[0])
        conn.execute("COMMIT")
        pending = int(conn.execute("SELECT count(*) FROM ops").fetchone()[0])
        return instance_id, pending

    def _close_sync(self) -> None:
        # append() refuses new ops once closed; write whatever is still queued
        # (a flush job resubmitted behind this one then finds nothing to do).
        while self._flush_one_batch():
            pass
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _flush_sync(self) -> None:
        """The flush job: group-commit one batch, then resubmit itself if ops
        are left, so peek/ack jobs queued meanwhile are not starved."""
        if self._flush_one_batch():
            self._executor.submit(self._flush_sync)

    def _flush_one_batch(self) -> bool:
        """Write the queued ops (up to ``max_batch``) in one transaction and hand
        the outcome to the loop. True if more ops are queued (the flush job
        stays submitted); False once the queue is empty (it is not any more)."""
        with self._queue_lock:
            count = min(len(self._queue), self.max_batch)
            batch = [self._queue.popleft() for _ in range(count)]
            more = bool(self._queue)
            if not more:
                self._flush_submitted = False
        if not batch:
            return False
        try:
            seqs = self._append_batch_sync([(q.kind, q.payload) for q in batch])
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            self._hand_over(batch, None, exc)
        else:
            self._hand_over(batch, seqs, None)
        return more

    def _append_batch_sync(self, rows: Sequence[tuple[str, str]]) -> list[int]:
        """INSERT ``rows`` in ONE transaction (all or nothing); their seqs, in order."""
        db = self._db()
        now = time.time()
        seqs: list[int] = []
        with _transaction(db):
            cur = db.cursor()
            for kind, payload in rows:
                cur.execute(
                    "INSERT INTO ops (kind, payload, appended_at) VALUES (?, ?, ?)",
                    (kind, payload, now),
                )
                assert cur.lastrowid is not None
                seqs.append(int(cur.lastrowid))
        return seqs

    def _hand_over(
        self, batch: list[_Queued], seqs: list[int] | None, exc: Exception | None
    ) -> None:
        # Worker thread: asyncio futures are resolved on their loop, never here.
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            batch[0].loop.call_soon_threadsafe(self._settle, batch, seqs, exc)

    def _settle(self, batch: list[_Queued], seqs: list[int] | None, exc: Exception | None) -> None:
        """Loop side: resolve each append of a batch, then count the batch once."""
        if seqs is None:
            assert exc is not None
            for queued in batch:
                if not queued.future.done():  # done: its append was cancelled
                    queued.future.set_exception(exc)
            return
        for queued, seq in zip(batch, seqs, strict=True):
            if not queued.future.done():  # cancelled while queued: written anyway
                queued.future.set_result(seq)
        self.append_commits += 1
        self._set_pending(self._pending + len(batch))
        self._changed.set()

    def _peek_sync(self, limit: int) -> list[tuple[int, str, str]]:
        rows = (
            self._db()
            .execute("SELECT seq, kind, payload FROM ops ORDER BY seq LIMIT ?", (limit,))
            .fetchall()
        )
        return [(int(s), str(k), str(p)) for s, k, p in rows]

    def _ack_sync(self, seqs: list[int]) -> int:
        db = self._db()
        with _transaction(db):
            cur = db.executemany("DELETE FROM ops WHERE seq = ?", [(s,) for s in seqs])
        return cur.rowcount

    def _park_sync(self, seq: int, error: str) -> int:
        db = self._db()
        with _transaction(db):
            db.execute(
                "INSERT OR REPLACE INTO dead_letter"
                " (seq, kind, payload, appended_at, error, parked_at)"
                " SELECT seq, kind, payload, appended_at, ?, ? FROM ops WHERE seq = ?",
                (error, time.time(), seq),
            )
            cur = db.execute("DELETE FROM ops WHERE seq = ?", (seq,))
        return cur.rowcount

    def _dead_letters_sync(self) -> list[tuple[int, str, str, str, float]]:
        rows = (
            self._db()
            .execute("SELECT seq, kind, payload, error, parked_at FROM dead_letter ORDER BY seq")
            .fetchall()
        )
        return [(int(a), str(b), str(c), str(d), float(e)) for a, b, c, d, e in rows]

    def _set_pending(self, value: int) -> None:
        self._pending = max(value, 0)
        if self._on_pending is not None:
            self._on_pending(self._pending)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error).

    If COMMIT itself fails the transaction is rolled back too, so the
    connection is never left inside a half-done transaction."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._rollback()
            return
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        # Best effort: the error that brought us here is the one to report.
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
