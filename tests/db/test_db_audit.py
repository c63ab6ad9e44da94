"""The audit table on a real PostgreSQL: append-only, written exactly once by the
relay, read (and filtered) over GET /api/audit, and written by ``siaga-pbx purge``."""

from __future__ import annotations

import getpass
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from pgtools import run_sync
from siaga_pbx import cli
from siaga_pbx.incidents import (
    AppendAudit,
    IncidentStore,
    Outbox,
    OutboxRelay,
    add_audit_routes,
    add_incident_routes,
)

from ._support import drain, fetch, fetchval

pytestmark = pytest.mark.timeout(60)

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z
TOKENS = {"tok-admin": "admin", "tok-sup": "supervisor", "tok-taker": "taker", "tok-ops": "ops"}
Client = TestClient[web.Request, web.Application]


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {next(t for t, r in TOKENS.items() if r == role)}"}


def row(at: float, who: str, action: str, target: str, **more: Any) -> AppendAudit:
    return AppendAudit(at=at, who=who, role=more.pop("role", "admin"), action=action,
                       target=target, **more)  # fmt: skip


async def write(dsn: str, tmp_path: Path, *ops: AppendAudit) -> None:
    async with Outbox(tmp_path / f"{uuid.uuid4().hex}.db") as outbox:
        for op in ops:
            await outbox.append(op)
        assert await drain(outbox, dsn) == len(ops)


class TestTable:
    async def test_update_delete_and_truncate_are_refused(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Once written, an audit row cannot be changed or removed, not even by the
        table's owner (the test runs as a superuser)."""
        await write(fresh_migrated_dsn, tmp_path, row(T0, "sari", "taker.logout", "taker:t2"))
        conn = await asyncpg.connect(fresh_migrated_dsn)
        try:
            for sql in (
                "UPDATE audit SET who = 'somebody else'",
                "DELETE FROM audit",
                "TRUNCATE audit",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(sql)
        finally:
            await conn.close()
        assert await fetchval(fresh_migrated_dsn, "SELECT who FROM audit") == "sari"

    async def test_the_documented_grants_leave_the_service_insert_and_select_only(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """With docs/AUDIT.md's grants the service's role writes audit rows through
        the relay, and PostgreSQL itself denies it UPDATE and DELETE."""
        role = f"siaga_svc_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(fresh_migrated_dsn)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            # What docs/AUDIT.md tells production to run (plus the relay's marker table).
            await admin.execute(f"REVOKE ALL ON audit FROM {role}")
            await admin.execute(f"GRANT SELECT, INSERT ON audit TO {role}")
            await admin.execute(f"GRANT SELECT, INSERT ON applied_ops TO {role}")
            dsn = fresh_migrated_dsn.replace("postgres@", f"{role}@", 1)
            await write(dsn, tmp_path, row(T0, "sari", "queues.replace", "queues"))
            service = await asyncpg.connect(dsn)
            try:
                for sql in ("UPDATE audit SET who = 'x'", "DELETE FROM audit"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission"):
                        await service.execute(sql)
            finally:
                await service.close()
        finally:
            await admin.execute("DROP OWNED BY " + role)
            await admin.execute("DROP ROLE " + role)
            await admin.close()
        assert await fetchval(fresh_migrated_dsn, "SELECT count(*) FROM audit") == 1

    async def test_request_strings_are_stored_whatever_they_hold(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """A target or reason with NUL or a lone surrogate (from a URL) is stored, not
        dead-lettered; nested JSON strings too."""
        op = row(T0, "sari", "call.remove_dispatcher", "call:\x00x", reason="bad \udcff",
                 after={"agency\udcff": ["\x00"]})  # fmt: skip
        await write(fresh_migrated_dsn, tmp_path, op)
        (r,) = await fetch(fresh_migrated_dsn, "SELECT target, reason, after FROM audit")
        assert (r["target"], r["reason"]) == ("call:\ufffdx", "bad \ufffd")
        assert r["after"] == '{"agency\ufffd": ["\ufffd"]}'


class TestRelay:
    async def test_an_audit_op_is_applied_exactly_once_across_a_crash(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """The relay crashes after PostgreSQL committed the row and before the local
        ack; the restarted relay replays it and the row is still there once."""
        path = tmp_path / "o.db"

        class Crash(Exception):
            pass

        def crash(seq: int) -> None:
            raise Crash

        async with Outbox(path) as outbox:
            await outbox.append(row(T0, "sari", "taker.pause", "taker:t1", request_id="r-1"))
            relay = OutboxRelay(outbox, fresh_migrated_dsn, after_apply=crash)
            with pytest.raises(Crash):
                await relay.drain()
            await relay.close()
            assert outbox.pending == 1  # not acked
        async with Outbox(path) as restarted:
            assert await drain(restarted, fresh_migrated_dsn) == 1
            assert restarted.pending == 0
        rows = await fetch(fresh_migrated_dsn, "SELECT request_id FROM audit")
        assert [r["request_id"] for r in rows] == ["r-1"]

    async def test_an_action_while_postgres_is_down_is_written_when_it_returns(
        self, fresh_migrated_dsn: str, closed_port_dsn: str, tmp_path: Path
    ) -> None:
        """The relay cannot reach PostgreSQL: the audit op waits in the outbox (its
        time is the action's), then is written once PostgreSQL answers."""
        async with Outbox(tmp_path / "o.db") as outbox:
            await outbox.append(row(T0, "sari", "taker.logout", "taker:t2"))
            down = OutboxRelay(outbox, closed_port_dsn, connect_timeout=1)
            with pytest.raises(OSError, match=r"[Cc]onnect"):
                await down.drain()
            await down.close()
            assert outbox.pending == 1
            assert await fetchval(fresh_migrated_dsn, "SELECT count(*) FROM audit") == 0
            assert await drain(outbox, fresh_migrated_dsn) == 1
        (r,) = await fetch(fresh_migrated_dsn, "SELECT at, recorded_at FROM audit")
        assert r["at"] == datetime.fromtimestamp(T0, UTC)
        assert r["recorded_at"] > r["at"]


# ---- GET /api/audit --------------------------------------------------------------

SEED = [
    row(T0 + 0, "admin:aaaaaaaaaaaa", "queues.replace", "queues", before=[1], after=[2]),
    row(T0 + 10, "sari", "taker.logout", "taker:t2", role="supervisor", username="sari",
        user_id="u-1"),
    row(T0 + 20, "taker:t1", "taker.login", "taker:t1", role="taker", source="handset"),
    row(T0 + 30, "sari", "taker.pause", "taker:t1", role="supervisor", username="sari",
        outcome="refused", status=409, reason="not allowed while 'offline'"),
    row(T0 + 40, "taker:aaaaaaaaaaaa", "call.add_dispatcher", "call:c1", role="taker",
        after={"agency": "damkar"}),
    row(T0 + 50, "cli:root", "purge", "retention", role="cli"),
]  # fmt: skip


@pytest.fixture
async def api(migrated_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """The audit API over a module database seeded once with ``SEED``."""
    if not await fetchval(migrated_dsn, "SELECT count(*) FROM audit"):
        await write(migrated_dsn, tmp_path_factory.mktemp("seed"), *SEED)
    store = IncidentStore(migrated_dsn)
    app = web.Application()
    add_incident_routes(app, store, TOKENS)
    add_audit_routes(app, store)
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await store.close()


async def audit_query(
    client: Client, query: str, status: int = 200, role: str = "supervisor"
) -> Any:
    resp = await client.get(f"/api/audit{query}", headers=auth(role))
    assert resp.status == status, await resp.text()
    return await resp.json()


def actions(body: Any) -> list[str]:
    return [item["action"] for item in body["items"]]


class TestAuditApi:
    async def test_everything_newest_first_with_every_field(self, api: Client) -> None:
        """Without filters every row comes back, newest action first, in full."""
        body = await audit_query(api, "")
        assert actions(body) == [op.action for op in reversed(SEED)]
        assert body["next_cursor"] is None
        refused = body["items"][2]
        assert {k: refused[k] for k in ("who", "username", "user_id", "role", "target",
                                        "outcome", "status", "reason")} == {
            "who": "sari", "username": "sari", "user_id": "", "role": "supervisor",
            "target": "taker:t1", "outcome": "refused", "status": 409,
            "reason": "not allowed while 'offline'",
        }  # fmt: skip
        assert body["items"][-1]["before"] == [1] and body["items"][-1]["after"] == [2]
        assert refused["at"] == datetime.fromtimestamp(T0 + 30, UTC).isoformat()

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                "?from=2025-06-15T15:07:00Z",
                ["purge", "call.add_dispatcher", "taker.pause", "taker.login"],
            ),
            ("?to=2025-06-15T15:07:00%2B00:00", ["taker.logout", "queues.replace"]),
            ("?from=2025-06-15T15:06:50Z&to=2025-06-15T15:07:10Z", ["taker.login", "taker.logout"]),
            ("?user=sari", ["taker.pause", "taker.logout"]),
            ("?user=u-1", ["taker.logout"]),
            ("?user=taker:t1", ["taker.login"]),
            ("?action=taker.pause", ["taker.pause"]),
            ("?action=taker.", ["taker.pause", "taker.login", "taker.logout"]),
            ("?action=taker", []),  # not a prefix without its dot
            ("?target=taker:t1", ["taker.pause", "taker.login"]),
            ("?target=call:c1", ["call.add_dispatcher"]),
            ("?outcome=refused", ["taker.pause"]),
            ("?user=sari&target=taker:t2", ["taker.logout"]),
        ],
    )
    async def test_filters(self, api: Client, query: str, expected: list[str]) -> None:
        """Time range, user (who, username or user id), action (exact or a 'x.'
        prefix), target and outcome filter the rows, and combine."""
        assert actions(await audit_query(api, query)) == expected

    async def test_pages_follow_one_another_without_gaps_or_repeats(self, api: Client) -> None:
        """With limit=4, the cursor leads through every row exactly once."""
        first = await audit_query(api, "?limit=4")
        assert len(first["items"]) == 4
        second = await audit_query(api, f"?limit=4&cursor={first['next_cursor']}")
        assert second["next_cursor"] is None
        assert actions(first) + actions(second) == [op.action for op in reversed(SEED)]

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("?from=2025-06-15T15:07:00", "from"),  # no offset: which clock?
            ("?limit=501", "limit"),
            ("?limit=0", "limit"),
            ("?cursor=bm9wZQ", "cursor"),
            ("?who=sari", "who"),
            ("?outcome=maybe", "outcome"),
            ("?user=a&user=b", "user"),
        ],
    )
    async def test_bad_queries_are_422_naming_the_parameter(
        self, api: Client, query: str, field: str
    ) -> None:
        """An invalid, repeated or unknown parameter is a 422 problem naming it."""
        body = await audit_query(api, query, status=422)
        assert [(e["in"], e["field"]) for e in body["errors"]] == [("query", field)]

    @pytest.mark.parametrize(("role", "status"), [("admin", 200), ("taker", 403), ("ops", 403)])
    async def test_only_admins_and_supervisors_read_the_audit(
        self, api: Client, role: str, status: int
    ) -> None:
        """The audit names people: admins and supervisors read it, takers and ops do not."""
        await audit_query(api, "", status=status, role=role)
        assert (await api.get("/api/audit")).status == 401

    async def test_postgres_down_is_a_503_that_says_so(self, closed_port_dsn: str) -> None:
        """With PostgreSQL unreachable the audit API answers 503 with a clear message."""
        store = IncidentStore(closed_port_dsn)
        app = web.Application()
        add_incident_routes(app, store, TOKENS)
        add_audit_routes(app, store)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/api/audit", headers=auth("admin"))
            assert resp.status == 503
            message = (await resp.json())["detail"]
        assert "PostgreSQL cannot be reached" in message
        assert "still audited" in message


class TestPurgeCommand:
    def test_purge_writes_an_audit_row_naming_the_os_user(
        self, fresh_migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``siaga-pbx purge`` leaves one row: cli:<os user>, with its report; a dry
        run changes nothing and writes none."""
        # The command configures logging for a process of its own (cached loggers);
        # in the test process that would blind later tests' capture_logs.
        monkeypatch.setattr("siaga_pbx.logs.configure", lambda *a, **k: None)
        monkeypatch.setenv("SIAGA_DATABASE_DSN", fresh_migrated_dsn)
        monkeypatch.delenv("SIAGA_CONFIG_FILE", raising=False)
        assert cli.main(["purge", "--dry-run"]) == 0
        assert cli.main(["purge"]) == 0
        rows = run_sync(lambda: fetch(fresh_migrated_dsn, "SELECT * FROM audit"))
        assert [(r["who"], r["role"], r["action"], r["target"], r["outcome"]) for r in rows] == [
            (f"cli:{getpass.getuser()}", "cli", "purge", "retention", "accepted")
        ]
        assert '"incidents_deleted": 0' in rows[0]["after"]
        assert rows[0]["source"].startswith("host:")
