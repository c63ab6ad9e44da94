"""The outbox relay against a real PostgreSQL: order, exactly-once, outages, restarts."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from siaga_pbx.incidents import IncidentRecorder, Outbox, OutboxRelay

from ._support import drain, fetch, fetchval, unique

pytestmark = pytest.mark.timeout(60)

STAGES = ["arrived", "greeted", "queued", "offered", "answered", "hung_up"]


class SimulatedCrash(BaseException):
    """Raised by the test seam: the process 'dies' (not an Exception, so nothing catches it)."""


async def record_call(recorder: IncidentRecorder, call_id: str, t0: float) -> None:
    """Append a call's open, six timeline entries and its close."""
    await recorder.open_call(call_id, arrived_at=t0, number=unique("08"), queue="main")
    for i, stage in enumerate(STAGES):
        await recorder.timeline(call_id, stage, t0 + i, {"n": i})
    await recorder.close_call(call_id, ended_at=t0 + 10, side="caller", cause=16)


async def stages_of(dsn: str, call_id: str) -> list[str]:
    rows = await fetch(dsn, "SELECT stage FROM timeline WHERE call_id = $1 ORDER BY id", call_id)
    return [r["stage"] for r in rows]


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Poll ``predicate()`` until true, or fail after ``timeout_s``."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polls counters of a running relay
            await asyncio.sleep(0.02)


class TestOutboxRelay:
    async def test_replays_in_order_exactly_once(self, migrated_dsn: str, tmp_path: Path) -> None:
        """Every op reaches PostgreSQL once, timeline rows in append order, outbox emptied."""
        async with Outbox(tmp_path / "o.db") as outbox:
            call_id = unique("call")
            await record_call(IncidentRecorder(outbox), call_id, time.time())
            assert outbox.pending == 8
            assert await drain(outbox, migrated_dsn) == 8
            assert outbox.pending == 0
            assert await drain(outbox, migrated_dsn) == 0
            assert await stages_of(migrated_dsn, call_id) == STAGES
            applied = await fetchval(
                migrated_dsn,
                "SELECT count(*) FROM applied_ops WHERE outbox_id = $1",
                outbox.instance_id,
            )
            assert applied == 8
            ended = await fetchval(
                migrated_dsn, "SELECT hangup_cause FROM calls WHERE call_id = $1", call_id
            )
            assert ended == "16"

    async def test_postgres_down_keeps_ops_then_delivers(
        self, migrated_dsn: str, closed_port_dsn: str, tmp_path: Path
    ) -> None:
        """With PostgreSQL unreachable the relay retries and keeps every op; once it is
        reachable the ops arrive in order, exactly once."""
        async with Outbox(tmp_path / "o.db") as outbox:
            relay = OutboxRelay(
                outbox, closed_port_dsn, backoff_initial=0.02, backoff_max=0.1, idle_poll_s=0.05
            )
            task = asyncio.create_task(relay.run())
            try:
                call_id = unique("call")
                with capture_logs() as logs:
                    await record_call(IncidentRecorder(outbox), call_id, time.time())
                    await wait_until(lambda: relay.failures >= 3)
                assert relay.pending == 8
                assert any(e["event"] == "outbox_relay_retrying" for e in logs)
                assert await stages_of(migrated_dsn, call_id) == []
                relay.dsn = migrated_dsn  # PostgreSQL is back
                await wait_until(lambda: relay.pending == 0)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert await stages_of(migrated_dsn, call_id) == STAGES

    async def test_crash_between_apply_and_ack_replays_harmlessly(
        self, migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Ops committed in PostgreSQL but not acked locally (a crash between the
        batch's commit and the ack) are replayed by the next relay without a
        duplicate effect."""
        path = tmp_path / "o.db"
        call_id = unique("call")
        async with Outbox(path) as outbox:
            await record_call(IncidentRecorder(outbox), call_id, time.time())
            entries = await outbox.peek()
            crash_seq = entries[3].seq  # ops: open, arrived, greeted, QUEUED, ...

            def crash(seq: int) -> None:
                if seq == crash_seq:
                    raise SimulatedCrash

            relay = OutboxRelay(outbox, migrated_dsn, after_apply=crash)
            with pytest.raises(SimulatedCrash):
                await relay.drain()
            await relay.close()
            # the batch is in PostgreSQL, but nothing of it was acked
            assert outbox.pending == len(entries)
            assert await stages_of(migrated_dsn, call_id) == STAGES
        async with Outbox(path) as reopened:  # "the restarted service"
            assert reopened.pending == len(entries)
            with capture_logs() as logs:
                assert await drain(reopened, migrated_dsn) == len(entries)
            assert reopened.pending == 0
        assert await stages_of(migrated_dsn, call_id) == STAGES  # nothing twice
        replayed = [e["event"] for e in logs].count("outbox_op_already_applied")
        assert replayed == len(entries)

    async def test_restart_with_pending_ops_replays_them(
        self, migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Ops appended by a service that stopped before relaying are delivered by
        the next service's relay from the same outbox file."""
        path = tmp_path / "o.db"
        call_id = unique("call")
        async with Outbox(path) as outbox:
            await record_call(IncidentRecorder(outbox), call_id, time.time())
            first_instance = outbox.instance_id
        async with Outbox(path) as outbox:
            assert outbox.pending == 8
            assert outbox.instance_id == first_instance
            relay = OutboxRelay(outbox, migrated_dsn, idle_poll_s=0.05)
            task = asyncio.create_task(relay.run())
            try:
                await wait_until(lambda: relay.pending == 0)
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        assert await stages_of(migrated_dsn, call_id) == STAGES

    async def test_permanently_rejected_op_is_parked_and_queue_continues(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """An op PostgreSQL rejects for its data goes to the dead-letter table with the
        error, is logged at error level, and the ops after it are still applied."""
        conn = await asyncpg.connect(fresh_migrated_dsn)
        try:  # a stricter database: stands in for any data PostgreSQL refuses
            await conn.execute(
                "ALTER TABLE timeline ADD CONSTRAINT no_poison CHECK (stage <> 'poison')"
            )
        finally:
            await conn.close()
        async with Outbox(tmp_path / "o.db") as outbox:
            recorder = IncidentRecorder(outbox)
            call_id = unique("call")
            t0 = time.time()
            await recorder.open_call(call_id, arrived_at=t0, number="0811")
            await recorder.timeline(call_id, "arrived", t0)
            poison_seq = await recorder.timeline(call_id, "poison", t0 + 1)
            await recorder.timeline(call_id, "hung_up", t0 + 2)
            with capture_logs() as logs:
                assert await drain(outbox, fresh_migrated_dsn) == 3
            assert outbox.pending == 0
            dead = await outbox.dead_letters()
            assert [d.seq for d in dead] == [poison_seq]
            assert "no_poison" in dead[0].error
            assert '"poison"' in dead[0].payload
        parked = [e for e in logs if e["event"] == "outbox_op_dead_lettered"]
        assert len(parked) == 1
        assert parked[0]["log_level"] == "error"
        assert await stages_of(fresh_migrated_dsn, call_id) == ["arrived", "hung_up"]

    async def test_undecodable_op_is_parked(self, migrated_dsn: str, tmp_path: Path) -> None:
        """A stored op this version cannot decode (say, from a newer version) is
        parked, not retried forever, and later ops still go through."""
        path = tmp_path / "o.db"
        call_id = unique("call")
        async with Outbox(path) as outbox:
            await outbox.open()
        raw = sqlite3.connect(path)
        with raw:
            raw.execute(
                "INSERT INTO ops (kind, payload, appended_at) VALUES ('from_the_future', '{}', 0)"
            )
        raw.close()
        async with Outbox(path) as outbox:
            await IncidentRecorder(outbox).open_call(call_id, arrived_at=time.time())
            assert outbox.pending == 2
            assert await drain(outbox, migrated_dsn) == 1
            dead = await outbox.dead_letters()
            assert [d.kind for d in dead] == ["from_the_future"]
            assert "unknown op kind" in dead[0].error
        assert (
            await fetchval(migrated_dsn, "SELECT count(*) FROM calls WHERE call_id = $1", call_id)
            == 1
        )
