"""PostgreSQL as the record of pending callbacks, on a real PostgreSQL: written
by the journal, resolved through the core (API), read back at start."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from siaga_pbx import core
from siaga_pbx.adapters.incidents import IncidentJournal
from siaga_pbx.incidents import (
    CallbackRestorer,
    IncidentRecorder,
    IncidentStore,
    Outbox,
    OutboxRelay,
    add_callback_routes,
    add_incident_routes,
    migrate,
)

from ._support import drain, fetch, fetchval

pytestmark = pytest.mark.timeout(60)

T0 = 1_750_000_000.0
TOKENS = {"tok-admin": "admin", "tok-taker": "taker", "tok-ops": "ops"}
Client = TestClient[web.Request, web.Application]


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {next(t for t, r in TOKENS.items() if r == role)}"}


def incident_of(call_id: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, call_id)


@dataclass
class Centre:
    """A real core, the real journal and outbox, and the callback API over a
    real store: the service's path for callbacks, without Asterisk."""

    client: Client
    dsn: str  # where the relay writes
    distributor: core.Distributor
    outbox: Outbox
    journal: IncidentJournal
    now: float = T0
    writer: asyncio.Task[None] | None = field(default=None, repr=False)

    def submit(self, event: core.Event) -> None:
        """What the consumer does: feed the core, hand what it publishes to the journal."""
        for cmd in self.distributor.handle(event, self.now):
            if isinstance(cmd, (core.PublishCallEvent, core.AddCallback, core.ResolveCallback)):
                self.journal.published(cmd, None)

    def abandon(self, call_id: str, number: str, *, wait_s: float = 12.0) -> None:
        arrival = core.CallerArrived(call_id, core.CallerIdentity(number), "main")
        self.journal.call_arrived(arrival, self.now, str(incident_of(call_id)))
        self.submit(arrival)
        self.now += wait_s
        self.submit(core.CallerHungUp(call_id))
        self.now += 1.0

    async def settle(self) -> None:
        """Everything journalled so far is in PostgreSQL."""
        await asyncio.wait_for(self.journal.flush(), 10)
        await drain(self.outbox, self.dsn)

    async def resolve(self, call_id: str, body: Any, role: str = "taker") -> tuple[int, Any]:
        resp = await self.client.post(
            f"/api/callbacks/{call_id}/resolve", json=body, headers=auth(role)
        )
        return resp.status, await resp.json()


def nobody_on_duty() -> core.CentreConfig:
    return core.CentreConfig(
        queues=(core.QueueConfig("main", reassurance_every_s=None),),
        takers=(core.TakerConfig("t1", "PJSIP/t1", ("main",), logged_in=False),),
    )


async def open_centre(
    tmp_path: Path, store_dsn: str, relay_dsn: str, *, max_callbacks: int = 100
) -> tuple[Centre, IncidentStore]:
    outbox = Outbox(tmp_path / "outbox.db")
    await outbox.open()
    journal = IncidentJournal(IncidentRecorder(outbox), tmp_path)
    distributor = core.Distributor(nobody_on_duty(), max_callbacks=max_callbacks)
    store = IncidentStore(store_dsn)
    app = web.Application()
    add_incident_routes(app, store, TOKENS)
    centre_box: list[Centre] = []

    def submit(event: core.Event) -> None:  # the Centre is built after its app
        centre_box[0].submit(event)

    add_callback_routes(app, store=store, submit=submit, holds=distributor.holds_callback)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    centre = Centre(client, relay_dsn, distributor, outbox, journal)
    centre.writer = asyncio.create_task(journal.run())
    centre_box.append(centre)
    return centre, store


async def close_centre(centre: Centre, store: IncidentStore) -> None:
    assert centre.writer is not None
    centre.writer.cancel()
    await centre.client.close()
    await store.close()
    await centre.outbox.close()


@pytest.fixture
async def centre(fresh_migrated_dsn: str, tmp_path: Path) -> AsyncIterator[Centre]:
    c, store = await open_centre(tmp_path, fresh_migrated_dsn, fresh_migrated_dsn)
    try:
        yield c
    finally:
        await close_centre(c, store)


def pending_ids(centre: Centre) -> list[str]:
    return [e["call_id"] for e in centre.distributor.snapshot(centre.now)["callbacks"]]


class TestResolveThroughTheCore:
    async def test_resolution_reaches_the_live_state_the_record_and_the_timeline(
        self, centre: Centre
    ) -> None:
        """Resolving from the API drops the callback from the core at once, and
        records in PostgreSQL who resolved it, when and how, with a timeline entry."""
        centre.abandon("c1", "0812000001")
        await centre.settle()
        resp = await centre.client.get("/api/callbacks", headers=auth("taker"))
        listed = (await resp.json())["items"]
        assert [(c["call_id"], c["status"]) for c in listed] == [("c1", "pending")]
        status, body = await centre.resolve("c1", {"resolution": "called_back", "note": "ok"})
        assert (status, body) == (
            202,
            {"accepted": "resolve", "call_id": "c1", "resolution": "called_back"},
        )
        assert pending_ids(centre) == []
        await centre.settle()
        row = (await fetch(centre.dsn, "SELECT * FROM callbacks WHERE call_id = 'c1'"))[0]
        assert row["status"] == "resolved"
        assert (row["resolution"], row["resolution_note"]) == ("called_back", "ok")
        assert row["resolved_by"].startswith("taker:")
        assert row["resolved_at"].timestamp() == pytest.approx(centre.now)
        assert row["incident_id"] == incident_of("c1")
        entries = await fetch(
            centre.dsn,
            "SELECT incident_id, detail FROM timeline WHERE call_id = 'c1'"
            " AND stage = 'callback_resolved'",
        )
        assert len(entries) == 1
        assert entries[0]["incident_id"] == incident_of("c1")
        assert '"resolution": "called_back"' in entries[0]["detail"]
        resp = await centre.client.get("/api/callbacks", headers=auth("taker"))
        assert (await resp.json())["items"] == []

    async def test_a_second_resolution_is_refused_and_changes_nothing(self, centre: Centre) -> None:
        """Once the record has it resolved, another resolution is a 409 and the
        first one's who/how/timeline stay as they were."""
        centre.abandon("c1", "0812000001")
        await centre.settle()
        assert (await centre.resolve("c1", {"resolution": "unreachable"}))[0] == 202
        await centre.settle()
        status, body = await centre.resolve("c1", {"resolution": "called_back"}, role="admin")
        assert status == 409
        assert "already resolved (unreachable)" in body["detail"]
        assert await fetchval(centre.dsn, "SELECT resolution FROM callbacks") == "unreachable"
        count = await fetchval(
            centre.dsn, "SELECT count(*) FROM timeline WHERE stage = 'callback_resolved'"
        )
        assert count == 1

    async def test_two_resolutions_racing_record_one(self, centre: Centre) -> None:
        """Two staff resolving at once (both accepted while the core held it):
        the record keeps the first and one timeline entry."""
        centre.abandon("c1", "0812000001")
        centre.submit(core.CallbackResolved("c1", core.CallbackResolution.CALLED_BACK, "a:1"))
        centre.submit(core.CallbackResolved("c1", core.CallbackResolution.NOT_NEEDED, "b:2"))
        await centre.settle()
        rows = await fetch(centre.dsn, "SELECT resolution, resolved_by FROM callbacks")
        assert [(r["resolution"], r["resolved_by"]) for r in rows] == [("called_back", "a:1")]
        count = await fetchval(
            centre.dsn, "SELECT count(*) FROM timeline WHERE stage = 'callback_resolved'"
        )
        assert count == 1

    @pytest.mark.parametrize(
        ("call_id", "body", "role", "status"),
        [
            ("nope", {"resolution": "called_back"}, "taker", 404),
            ("c1", {"resolution": "done"}, "taker", 422),
            ("c1", {"resolution": "called_back", "extra": 1}, "taker", 422),
            ("c1", {"resolution": "called_back", "note": "n" * 501}, "taker", 422),
            ("c1", ["called_back"], "taker", 422),
            ("c1", {"resolution": "called_back"}, "ops", 403),
        ],
        ids=["unknown", "bad-resolution", "extra-field", "long-note", "not-an-object", "ops"],
    )
    async def test_bad_requests_change_nothing(
        self, centre: Centre, call_id: str, body: Any, role: str, status: int
    ) -> None:
        """Unknown callbacks, malformed bodies and the ops role are refused; the
        callback stays pending in the core."""
        centre.abandon("c1", "0812000001")
        await centre.settle()
        assert (await centre.resolve(call_id, body, role=role))[0] == status
        assert pending_ids(centre) == ["c1"]

    async def test_a_callback_evicted_from_memory_is_resolved_from_the_record(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Past the core's bound the oldest callback is still pending in
        PostgreSQL, listed there, and can be resolved."""
        c, store = await open_centre(
            tmp_path, fresh_migrated_dsn, fresh_migrated_dsn, max_callbacks=1
        )
        try:
            c.abandon("c1", "0812000001")
            c.abandon("c2", "0812000002")
            await c.settle()
            assert pending_ids(c) == ["c2"]
            resp = await c.client.get("/api/callbacks", headers=auth("taker"))
            assert [i["call_id"] for i in (await resp.json())["items"]] == ["c1", "c2"]
            assert (await c.resolve("c1", {"resolution": "called_again"}))[0] == 202
            await c.settle()
            rows = await fetch(fresh_migrated_dsn, "SELECT call_id, status FROM callbacks")
            assert sorted((r["call_id"], r["status"]) for r in rows) == [
                ("c1", "resolved"),
                ("c2", "pending"),
            ]
        finally:
            await close_centre(c, store)

    async def test_with_postgres_down_a_held_callback_is_resolved_and_recorded_later(
        self, fresh_migrated_dsn: str, closed_port_dsn: str, tmp_path: Path
    ) -> None:
        """With PostgreSQL down, a callback the core holds is resolved at once
        (the outbox keeps it), one only the record knows is a 503; once
        PostgreSQL is back the resolution is there."""
        c, store = await open_centre(tmp_path, closed_port_dsn, fresh_migrated_dsn)
        try:
            c.abandon("c1", "0812000001")
            assert (await c.resolve("c1", {"resolution": "called_back"}))[0] == 202
            assert pending_ids(c) == []
            assert (await c.resolve("c9", {"resolution": "called_back"}))[0] == 503
            await c.settle()  # PostgreSQL is back: the relay drains the outbox
            row = (await fetch(fresh_migrated_dsn, "SELECT * FROM callbacks"))[0]
            assert (row["call_id"], row["status"], row["resolution"]) == (
                "c1",
                "resolved",
                "called_back",
            )
        finally:
            await close_centre(c, store)


class TestRestore:
    async def seed(self, outbox: Outbox, dsn: str) -> None:
        """Four callbacks, c2 resolved; applied to PostgreSQL."""
        rec = IncidentRecorder(outbox)
        for n in (1, 2, 3, 4):
            call_id = f"c{n}"
            at = T0 + 100 * n
            await rec.open_call(call_id, arrived_at=at, number=f"081200000{n}")
            await rec.callback(
                core.CallbackEntry(call_id, f"081200000{n}", at, at + 10, "main", "waiting")
            )
        await rec.resolve_callback(
            core.ResolveCallback("c2", core.CallbackResolution.NOT_NEEDED, "admin:x", T0 + 500)
        )
        await drain(outbox, dsn)

    async def test_restore_hands_the_newest_pending_to_the_core_oldest_first(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Within the core's bound, the most recently abandoned pending callbacks
        are restored, in order of abandonment; resolved ones are not."""
        got: list[tuple[core.CallbackEntry, ...]] = []
        async with Outbox(tmp_path / "o.db") as outbox:
            await self.seed(outbox, fresh_migrated_dsn)
            store = IncidentStore(fresh_migrated_dsn)
            relay = OutboxRelay(outbox, fresh_migrated_dsn)
            try:
                restorer = CallbackRestorer(store, relay, got.append, limit=2)
                assert await asyncio.wait_for(restorer.run(), 10) == 2
            finally:
                await store.close()
        assert got == [
            (
                core.CallbackEntry("c3", "0812000003", T0 + 300, T0 + 310, "main", "waiting"),
                core.CallbackEntry("c4", "0812000004", T0 + 400, T0 + 410, "main", "waiting"),
            )
        ]
        d = core.Distributor(nobody_on_duty())
        d.handle(core.CallbacksRestored(got[0]), T0 + 600)
        assert [e["call_id"] for e in d.snapshot(T0 + 600)["callbacks"]] == ["c3", "c4"]

    async def test_restore_waits_for_the_backlog_and_for_postgres_without_blocking(
        self, fresh_migrated_dsn: str, closed_port_dsn: str, tmp_path: Path
    ) -> None:
        """The restorer waits until the previous run's outbox backlog reached
        PostgreSQL, retries while PostgreSQL is unreachable, and then restores
        the callback that was only in the backlog."""
        got: list[tuple[core.CallbackEntry, ...]] = []
        async with Outbox(tmp_path / "o.db") as outbox:
            rec = IncidentRecorder(outbox)
            await rec.open_call("c1", arrived_at=T0, number="0812000001")
            await rec.callback(
                core.CallbackEntry("c1", "0812000001", T0, T0 + 9, "main", "ringing")
            )
            store = IncidentStore(closed_port_dsn)
            relay = OutboxRelay(outbox, fresh_migrated_dsn)
            restorer = CallbackRestorer(
                store, relay, got.append, poll_s=0.05, retry_initial_s=0.05, retry_max_s=0.1
            )
            assert restorer.backlog == 2
            task = asyncio.create_task(restorer.run())
            try:
                await asyncio.sleep(0.3)
                assert not task.done()  # the backlog is not in PostgreSQL yet
                await relay.drain()
                await relay.close()
                await asyncio.sleep(0.5)
                assert not task.done()  # PostgreSQL "down" for the store
                store._dsn = fresh_migrated_dsn  # PostgreSQL is back
                assert await asyncio.wait_for(task, 10) == 1
            finally:
                task.cancel()
                await store.close()
        assert [[e.call_id for e in batch] for batch in got] == [["c1"]]
        assert got[0][0].where == "ringing"


class TestSchema:
    async def test_callbacks_marked_done_before_0006_become_resolved(
        self, fresh_dsn: str, tmp_path: Path
    ) -> None:
        """Migration 0006 keeps the history: a callback marked done by hand
        becomes resolved as called back, with its who and when."""
        older = tmp_path / "migrations"
        older.mkdir()
        root = resources.files("siaga_pbx.incidents").joinpath("migrations")
        for entry in root.iterdir():
            if entry.name.endswith(".sql") and entry.name < "0006":
                shutil.copyfile(str(entry), older / entry.name)
        await migrate(fresh_dsn, directory=older)
        await fetch(
            fresh_dsn,
            "INSERT INTO callbacks (call_id, number, arrived_at, abandoned_at, where_abandoned,"
            " status, status_at, status_by) VALUES"
            " ('old', '0812', now() - interval '1 hour', now() - interval '59 minutes',"
            "  'waiting', 'done', now() - interval '30 minutes', 'taker:ab12'),"
            " ('open', '0813', now(), now(), 'waiting', 'pending', NULL, NULL)",
        )
        assert "0006_callback_resolution.sql" in await migrate(fresh_dsn)
        rows = {
            r["call_id"]: r
            for r in await fetch(
                fresh_dsn, "SELECT call_id, status, resolution, resolved_by FROM callbacks"
            )
        }
        assert (rows["old"]["status"], rows["old"]["resolution"]) == ("resolved", "called_back")
        assert rows["old"]["resolved_by"] == "taker:ab12"
        assert (rows["open"]["status"], rows["open"]["resolution"]) == ("pending", None)

    async def test_a_resolved_row_must_say_who_when_and_how(self, fresh_migrated_dsn: str) -> None:
        """The table refuses a resolved callback without its resolution."""
        with pytest.raises(Exception, match="callbacks_resolved_complete"):
            await fetch(
                fresh_migrated_dsn,
                "INSERT INTO callbacks (call_id, number, arrived_at, abandoned_at,"
                " where_abandoned, status) VALUES ('x', '1', now(), now(), 'waiting', 'resolved')",
            )

    async def test_call_times_end_only_when_the_caller_leaves_the_centre(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """In call_times a queue-to-queue overflow is not an end (the caller
        still waits); an overflow to a dial string is."""
        async with Outbox(tmp_path / "o.db") as outbox:
            rec = IncidentRecorder(outbox)
            moves: dict[str, dict[str, str | int | float | bool]] = {
                "moved": {"from_queue": "main", "to_queue": "backup", "reason": "wait"},
                "redirected": {"from_queue": "main", "dial": "PJSIP/backup", "reason": "wait"},
            }
            for call_id, detail in moves.items():
                await rec.open_call(call_id, arrived_at=T0)
                await rec.timeline(call_id, "arrived", T0)
                await rec.timeline(call_id, "overflowed", T0 + 30, detail)
            await drain(outbox, fresh_migrated_dsn)
        rows = {
            r["call_id"]: r
            for r in await fetch(fresh_migrated_dsn, "SELECT call_id, ended_at FROM call_times")
        }
        assert rows["moved"]["ended_at"] is None
        assert rows["redirected"]["ended_at"].timestamp() == pytest.approx(T0 + 30)
