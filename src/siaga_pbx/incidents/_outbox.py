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
Because the executor has a single worker, jobs run in submission order, so
concurrent ``append`` calls keep the order in which they were made.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ._ops import Op, decode_op, encode_op

__all__ = ["DeadLetter", "Outbox", "OutboxEntry"]

_T = TypeVar("_T")

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
    is called with the new value whenever it changes.
    """

    def __init__(
        self, path: str | Path, *, on_pending: Callable[[int], None] | None = None
    ) -> None:
        self.path = Path(path)
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
        """Close the file and stop the worker thread. Pending ops stay on disk."""
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
        """Store ``op`` durably; return its ``seq``. Never touches the network."""
        kind, payload = encode_op(op)
        await self.open()
        seq = await self._run(self._append_sync, kind, payload)
        self._set_pending(self._pending + 1)
        self._changed.set()
        return seq

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
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _append_sync(self, kind: str, payload: str) -> int:
        db = self._db()
        with _transaction(db):
            cur = db.execute(
                "INSERT INTO ops (kind, payload, appended_at) VALUES (?, ?, ?)",
                (kind, payload, time.time()),
            )
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

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
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("ROLLBACK" if exc_type is not None else "COMMIT")
