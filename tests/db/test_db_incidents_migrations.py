"""Migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from siaga_pbx.incidents import migrate, migration_files

from ._support import fetch

pytestmark = pytest.mark.timeout(60)

EXPECTED_TABLES = {
    "incidents",
    "calls",
    "incident_links",
    "timeline",
    "recordings",
    "callbacks",
    "applied_ops",
    "purge_audit",
    "schema_migrations",
}


class TestMigrate:
    async def test_from_empty_applies_every_file_in_order(self, fresh_dsn: str) -> None:
        """On an empty database every shipped migration is applied, in number order."""
        applied = await migrate(fresh_dsn)
        assert applied == migration_files()
        assert applied == sorted(applied)
        assert len(applied) >= 3
        tables = {
            r["tablename"]
            for r in await fetch(
                fresh_dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert tables >= EXPECTED_TABLES
        recorded = [
            r["name"]
            for r in await fetch(fresh_dsn, "SELECT name FROM schema_migrations ORDER BY name")
        ]
        assert recorded == applied

    async def test_second_run_applies_nothing_and_keeps_data(self, fresh_dsn: str) -> None:
        """Running migrate again applies nothing and leaves existing rows alone."""
        await migrate(fresh_dsn)
        conn = await asyncpg.connect(fresh_dsn)
        try:
            await conn.execute(
                "INSERT INTO incidents (id, opened_at) VALUES (gen_random_uuid(), now())"
            )
        finally:
            await conn.close()
        assert await migrate(fresh_dsn) == []
        assert len(await fetch(fresh_dsn, "SELECT id FROM incidents")) == 1

    async def test_concurrent_runs_apply_each_file_exactly_once(self, fresh_dsn: str) -> None:
        """Two migrate calls racing on an empty database: the advisory lock makes one
        apply everything and the other find nothing to do, with no error."""
        first, second = await asyncio.gather(migrate(fresh_dsn), migrate(fresh_dsn))
        assert sorted([first, second], key=len) == [[], migration_files()]
        rows = await fetch(fresh_dsn, "SELECT name FROM schema_migrations")
        assert len(rows) == len(migration_files())
