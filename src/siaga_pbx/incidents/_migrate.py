"""Numbered plain-SQL migrations (``migrations/NNNN_name.sql``).

``migrate(dsn)`` takes a session advisory lock first, so two service
instances starting at once apply each file exactly once: the second waits,
then finds nothing left to do. Each file runs in its own transaction together
with its ``schema_migrations`` row, so a failed file leaves no trace and is
retried next time. A file that was already applied but has since changed is an
error (its checksum no longer matches): edit history by adding a new file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg
import structlog

__all__ = ["MigrationError", "migrate", "migration_files"]

log = structlog.get_logger(__name__)

# Any constant shared by every instance of the service; "SIAGA112" in ASCII.
_LOCK_KEY = 0x5349414741313132
_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The database's migration history disagrees with the files shipped."""


@dataclass(frozen=True, slots=True)
class _Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migration_files(directory: Path | None = None) -> list[str]:
    """Names of the shipped migration files, in the order they apply."""
    return [m.name for m in _load(directory)]


def _load(directory: Path | None) -> list[_Migration]:
    if directory is None:
        root = resources.files("siaga_pbx.incidents").joinpath("migrations")
        entries = [(e.name, e.read_text(encoding="utf-8")) for e in root.iterdir()]
    else:
        entries = [(p.name, p.read_text(encoding="utf-8")) for p in directory.iterdir()]
    migrations = sorted(
        (_Migration(name, sql) for name, sql in entries if _NAME.match(name)),
        key=lambda m: m.name,
    )
    numbers = [m.name[:4] for m in migrations]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migration files share a number: {numbers}")
    return migrations


async def migrate(dsn: str, *, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet applied; return the names applied now."""
    migrations = _load(directory)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            return await _apply_all(conn, migrations)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()


async def _apply_all(conn: asyncpg.Connection, migrations: list[_Migration]) -> list[str]:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY,"
        " checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )
    done = {
        r["name"]: r["checksum"]
        for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")
    }
    applied: list[str] = []
    for m in migrations:
        if m.name in done:
            if done[m.name] != m.checksum:
                raise MigrationError(
                    f"migration {m.name} changed after it was applied; add a new file instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(m.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                m.name,
                m.checksum,
            )
        log.info("incident_migration_applied", migration=m.name)
        applied.append(m.name)
    return applied
