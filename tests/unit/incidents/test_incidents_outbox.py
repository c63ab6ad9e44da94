"""The local SQLite outbox (no PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from siaga_pbx.incidents import AppendTimeline, CloseCall, Outbox, OutboxRelay

pytestmark = pytest.mark.timeout(30)


def op(i: int) -> AppendTimeline:
    return AppendTimeline(f"call-{i}", "queued", 1.7e9 + i, {"i": i})


class TestOutbox:
    async def test_append_then_peek_in_order(self, tmp_path: Path) -> None:
        """Appended ops come back from peek in append order with increasing seq."""
        async with Outbox(tmp_path / "o.db") as outbox:
            seqs = [await outbox.append(op(i)) for i in range(5)]
            assert seqs == sorted(seqs)
            assert len(set(seqs)) == 5
            entries = await outbox.peek()
            assert [e.seq for e in entries] == seqs
            assert [e.op for e in entries] == [op(i) for i in range(5)]
            assert outbox.pending == 5

    async def test_concurrent_appends_keep_call_order(self, tmp_path: Path) -> None:
        """Appends started together are stored in the order they were started."""
        async with Outbox(tmp_path / "o.db") as outbox:
            seqs = await asyncio.gather(*(outbox.append(op(i)) for i in range(50)))
            entries = await outbox.peek(100)
            assert [e.op for e in entries] == [op(i) for i in range(50)]
            assert list(seqs) == [e.seq for e in entries]

    async def test_ops_survive_reopen_with_same_instance_id(self, tmp_path: Path) -> None:
        """A reopened outbox still holds unacked ops and keeps its instance id."""
        path = tmp_path / "o.db"
        async with Outbox(path) as outbox:
            await outbox.append(op(1))
            await outbox.append(op(2))
            first = await outbox.peek()
            await outbox.ack([first[0].seq])
            instance = outbox.instance_id
        async with Outbox(path) as again:
            assert again.pending == 1
            assert again.instance_id == instance
            uuid.UUID(instance)
            assert [e.op for e in await again.peek()] == [op(2)]

    async def test_seq_is_never_reused_after_everything_is_acked(self, tmp_path: Path) -> None:
        """After all ops are acked (and the file reopened) new ops get higher seqs, so
        PostgreSQL's applied_ops never mistakes a new op for an old one."""
        path = tmp_path / "o.db"
        async with Outbox(path) as outbox:
            last = await outbox.append(op(1))
            await outbox.ack([last])
            assert outbox.pending == 0
        async with Outbox(path) as again:
            assert await again.append(op(2)) > last

    async def test_park_moves_op_to_dead_letter(self, tmp_path: Path) -> None:
        """park removes the op from the queue and keeps it with its error."""
        async with Outbox(tmp_path / "o.db") as outbox:
            seq = await outbox.append(CloseCall("c1", 1.7e9, "caller", "16"))
            keep = await outbox.append(op(2))
            await outbox.park(seq, "DataError: nope")
            assert outbox.pending == 1
            assert [e.seq for e in await outbox.peek()] == [keep]
            dead = await outbox.dead_letters()
            assert [(d.seq, d.kind, d.error) for d in dead] == [
                (seq, "close_call", "DataError: nope")
            ]
            assert '"c1"' in dead[0].payload

    async def test_pending_hook_sees_every_change(self, tmp_path: Path) -> None:
        """on_pending is called with the new count after append, ack and park."""
        seen: list[int] = []
        async with Outbox(tmp_path / "o.db", on_pending=seen.append) as outbox:
            a = await outbox.append(op(1))
            b = await outbox.append(op(2))
            await outbox.ack([a])
            await outbox.park(b, "x")
        assert seen == [0, 1, 2, 1, 0]

    async def test_file_is_wal_with_full_sync_on_a_worker_thread(self, tmp_path: Path) -> None:
        """The outbox runs SQLite in WAL mode with synchronous=FULL, off the loop's thread."""
        path = tmp_path / "o.db"
        async with Outbox(path) as outbox:
            await outbox.append(op(1))

            def pragmas() -> tuple[str, int, int]:
                db = outbox._db()
                return (
                    db.execute("PRAGMA journal_mode").fetchone()[0],
                    db.execute("PRAGMA synchronous").fetchone()[0],
                    threading.get_ident(),
                )

            mode, sync, thread = await outbox._run(pragmas)
        assert mode == "wal"
        assert sync == 2  # FULL
        assert thread != threading.get_ident()

    async def test_undecodable_row_is_reported_not_raised(self, tmp_path: Path) -> None:
        """A row this version cannot decode peeks as op=None with the reason."""
        path = tmp_path / "o.db"
        async with Outbox(path) as outbox:
            await outbox.open()
        db = sqlite3.connect(path)
        with db:
            db.execute("INSERT INTO ops (kind, payload, appended_at) VALUES ('nope', '{}', 0)")
        db.close()
        async with Outbox(path) as outbox:
            [entry] = await outbox.peek()
            assert entry.op is None
            assert "unknown op kind" in entry.error

    async def test_wait_for_ops_wakes_on_append(self, tmp_path: Path) -> None:
        """wait_for_ops returns promptly once an op is appended (not after its timeout)."""
        async with Outbox(tmp_path / "o.db") as outbox:
            await outbox.open()
            waiter = asyncio.create_task(outbox.wait_for_ops(10.0))
            await asyncio.sleep(0.05)
            assert not waiter.done()
            started = time.monotonic()
            await outbox.append(op(1))
            await asyncio.wait_for(waiter, 2.0)
            assert time.monotonic() - started < 2.0


async def hold_worker(outbox: Outbox) -> threading.Event:
    """Occupy the outbox's single worker thread until the returned event is set,
    so appends made meanwhile queue up for the next group commit."""
    await outbox.open()
    release = threading.Event()
    started = threading.Event()

    def job() -> None:
        started.set()
        release.wait(10)

    outbox._executor.submit(job)
    await asyncio.to_thread(started.wait, 5)
    return release


async def until_queued(outbox: Outbox, count: int) -> None:
    """Wait until ``count`` appends wait in the outbox's group-commit queue."""
    for _ in range(10_000):
        if len(outbox._queue) >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"only {len(outbox._queue)} of {count} appends queued")


def increasing(seqs: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(seqs))


def boom() -> AppendTimeline:
    return AppendTimeline("call-boom", "queued", 1.7e9, {"boom": 1})


class TestGroupCommit:
    async def test_many_concurrent_appends_are_durable_in_call_order(self, tmp_path: Path) -> None:
        """1000 concurrent appends get strictly increasing seqs in call order, share
        far fewer commits than ops, and are all on disk when the file is reopened."""
        path = tmp_path / "o.db"
        async with Outbox(path) as outbox:
            seqs = await asyncio.gather(*(outbox.append(op(i)) for i in range(1000)))
            assert increasing(seqs)
            assert outbox.pending == 1000
            assert 1 <= outbox.append_commits <= 1000 // 10
        async with Outbox(path) as again:
            entries = await again.peek(2000)
        assert [e.seq for e in entries] == list(seqs)
        assert [e.op for e in entries] == [op(i) for i in range(1000)]

    async def test_appends_before_the_file_is_open_keep_call_order(self, tmp_path: Path) -> None:
        """Appends that all wait for the implicit open still get seqs in call order."""
        outbox = Outbox(tmp_path / "o.db")
        try:
            seqs = await asyncio.gather(*(outbox.append(op(i)) for i in range(50)))
            entries = await outbox.peek(100)
        finally:
            await outbox.close()
        assert [e.op for e in entries] == [op(i) for i in range(50)]
        assert list(seqs) == [e.seq for e in entries]

    async def test_appends_queued_during_a_commit_share_one_transaction(
        self, tmp_path: Path
    ) -> None:
        """Appends made while the worker is busy are written by ONE transaction, and
        pending / on_pending / the relay's wake-up change once for the batch."""
        seen: list[int] = []
        async with Outbox(tmp_path / "o.db", on_pending=seen.append) as outbox:
            release = await hold_worker(outbox)
            waiter = asyncio.create_task(outbox.wait_for_ops(10.0))
            tasks = [asyncio.create_task(outbox.append(op(i))) for i in range(10)]
            await until_queued(outbox, 10)
            release.set()
            seqs = await asyncio.gather(*tasks)
            await asyncio.wait_for(waiter, 2.0)
            assert outbox.append_commits == 1
            assert list(seqs) == list(range(seqs[0], seqs[0] + 10))
            assert seen == [0, 10]
            assert [e.op for e in await outbox.peek()] == [op(i) for i in range(10)]

    async def test_a_batch_is_capped_at_max_batch(self, tmp_path: Path) -> None:
        """No transaction writes more than max_batch ops; order holds across batches."""
        async with Outbox(tmp_path / "o.db", max_batch=4) as outbox:
            release = await hold_worker(outbox)
            tasks = [asyncio.create_task(outbox.append(op(i))) for i in range(10)]
            await until_queued(outbox, 10)
            release.set()
            seqs = await asyncio.gather(*tasks)
            assert outbox.append_commits == 3  # 4 + 4 + 2
            assert increasing(seqs)
            assert [e.op for e in await outbox.peek()] == [op(i) for i in range(10)]

    async def test_a_failing_batch_fails_every_caller_and_writes_nothing(
        self, tmp_path: Path
    ) -> None:
        """One op that SQLite refuses mid-batch rolls back the whole batch: every
        caller of that batch gets the error, nothing is on disk, the next append works."""
        seen: list[int] = []
        async with Outbox(tmp_path / "o.db", on_pending=seen.append) as outbox:
            await outbox.open()

            def add_trigger() -> None:
                outbox._db().execute(
                    "CREATE TRIGGER refuse BEFORE INSERT ON ops"
                    " WHEN NEW.payload LIKE '%\"boom\"%'"
                    " BEGIN SELECT RAISE(ABORT, 'boom refused'); END"
                )

            await outbox._run(add_trigger)
            release = await hold_worker(outbox)
            batch = [op(0), op(1), boom(), op(3), op(4)]
            tasks = [asyncio.create_task(outbox.append(o)) for o in batch]
            await until_queued(outbox, len(batch))
            release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
            assert "boom refused" in str(results[0])
            assert await outbox.peek() == []
            assert outbox.pending == 0
            assert outbox.append_commits == 0
            seq = await outbox.append(op(5))
            assert [(e.seq, e.op) for e in await outbox.peek()] == [(seq, op(5))]
            assert seen == [0, 1]

    async def test_a_writer_error_reaches_the_whole_batch_once(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the batch writer raises, all its appends raise that error; the next works."""
        async with Outbox(tmp_path / "o.db") as outbox:
            real = outbox._append_batch_sync
            calls = 0

            def flaky(rows: list[tuple[str, str]]) -> list[int]:
                nonlocal calls
                calls += 1
                if calls == 1:
                    raise OSError("disk on fire")
                return real(rows)

            monkeypatch.setattr(outbox, "_append_batch_sync", flaky)
            release = await hold_worker(outbox)
            tasks = [asyncio.create_task(outbox.append(op(i))) for i in range(3)]
            await until_queued(outbox, 3)
            release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert [type(r) for r in results] == [OSError] * 3
            assert outbox.pending == 0
            seq = await outbox.append(op(9))
            assert [(e.seq, e.op) for e in await outbox.peek()] == [(seq, op(9))]
            assert outbox.pending == 1

    async def test_close_writes_every_queued_append(self, tmp_path: Path) -> None:
        """close() commits what was appended before it (several batches here), and
        append after close raises."""
        path = tmp_path / "o.db"
        outbox = Outbox(path, max_batch=5)
        release = await hold_worker(outbox)
        tasks = [asyncio.create_task(outbox.append(op(i))) for i in range(20)]
        await until_queued(outbox, 20)
        closing = asyncio.create_task(outbox.close())
        await asyncio.sleep(0.01)
        release.set()
        await closing
        seqs = await asyncio.gather(*tasks)
        assert increasing(seqs)
        assert outbox.append_commits == 4
        with pytest.raises(RuntimeError, match="closed"):
            await outbox.append(op(99))
        async with Outbox(path) as again:
            assert [e.seq for e in await again.peek()] == list(seqs)
            assert again.pending == 20

    async def test_a_cancelled_append_is_still_written(self, tmp_path: Path) -> None:
        """Cancelling an append that is already queued does not lose its op."""
        async with Outbox(tmp_path / "o.db") as outbox:
            release = await hold_worker(outbox)
            tasks = [asyncio.create_task(outbox.append(op(i))) for i in range(3)]
            await until_queued(outbox, 3)
            tasks[1].cancel()
            release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert isinstance(results[1], asyncio.CancelledError)
            assert [e.op for e in await outbox.peek()] == [op(0), op(1), op(2)]
            assert outbox.pending == 3

    def test_max_batch_must_be_positive(self, tmp_path: Path) -> None:
        """A batch cap below one is a configuration error."""
        with pytest.raises(ValueError, match="max_batch"):
            Outbox(tmp_path / "o.db", max_batch=0)


class TestRelayWithoutPostgres:
    async def test_retries_with_capped_backoff_and_keeps_ops(self, tmp_path: Path) -> None:
        """Against a refusing port the relay keeps retrying at the capped interval and
        never drops an op (uncapped doubling from 10 ms would manage at most 7 tries in 1 s)."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with Outbox(tmp_path / "o.db") as outbox:
            for i in range(3):
                await outbox.append(op(i))
            relay = OutboxRelay(
                outbox,
                f"postgresql://postgres@127.0.0.1:{port}/x",
                backoff_initial=0.01,
                backoff_max=0.02,
                connect_timeout=1.0,
                linger_s=0.0,  # count retries, not the batching pause before each
            )
            task = asyncio.create_task(relay.run())
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert relay.failures >= 15
            assert outbox.pending == 3
            assert [e.op for e in await outbox.peek()] == [op(i) for i in range(3)]
            assert "Connect" in relay.last_error or "refused" in relay.last_error.lower()

    def test_backoff_bounds_are_checked(self, tmp_path: Path) -> None:
        """A relay with an initial backoff above its cap is a configuration error."""
        with pytest.raises(ValueError, match="backoff"):
            OutboxRelay(
                Outbox(tmp_path / "o.db"), "postgresql://x", backoff_initial=6, backoff_max=5
            )


class TestIncidentRecorder:
    async def test_each_method_appends_one_typed_op(self, tmp_path: Path) -> None:
        """The facade turns each call into exactly one op in the outbox, nothing else."""
        from siaga_pbx.core import CallbackEntry, CallStage, HangupSide, PublishCallEvent
        from siaga_pbx.incidents import (
            AddCallbackEntry,
            IncidentRecorder,
            OpenIncident,
            RecordingInfo,
            RegisterRecording,
        )

        async with Outbox(tmp_path / "o.db") as outbox:
            rec = IncidentRecorder(outbox)
            incident = await rec.open_call(
                "c1", arrived_at=1.7e9, number="0812", name="Ibu", pai="+62812", queue="main"
            )
            await rec.publish(PublishCallEvent("c1", CallStage.ANSWERED, 1.7e9 + 5, {"t": "x"}))
            await rec.recording(
                "c1", RecordingInfo("/r/c1.wav", 10, "a" * 64, 1.0), started_at=1.7e9 + 5
            )
            await rec.callback(CallbackEntry("c1", "+62812", 1.7e9, 1.7e9 + 3, "main", "ringing"))
            await rec.close_call("c1", ended_at=1.7e9 + 9, side=HangupSide.CALLER, cause=16)
            ops = [e.op for e in await outbox.peek()]
        assert ops == [
            OpenIncident("c1", incident, 1.7e9, "0812", "Ibu", "+62812", "", "main", ""),
            AppendTimeline("c1", "answered", 1.7e9 + 5, {"t": "x"}),
            RegisterRecording("c1", "/r/c1.wav", 1.7e9 + 5, None, 1.0, 10, "a" * 64),
            AddCallbackEntry("c1", "+62812", 1.7e9, 1.7e9 + 3, "main", "ringing"),
            CloseCall("c1", 1.7e9 + 9, "caller", "16"),
        ]

    async def test_bad_callback_where_is_refused(self, tmp_path: Path) -> None:
        """A callback entry with an unknown 'where' is the caller's error, not stored."""
        from siaga_pbx.core import CallbackEntry
        from siaga_pbx.incidents import IncidentRecorder

        async with Outbox(tmp_path / "o.db") as outbox:
            with pytest.raises(ValueError, match="where"):
                await IncidentRecorder(outbox).callback(
                    CallbackEntry("c1", "1", 1.0, 2.0, "main", "nowhere")
                )
            assert outbox.pending == 0
