"""Where the centre's configuration is kept: PostgreSQL (migration 0009) and a local copy.

``PgConfigStore``: every read and every edit is one transaction under one
advisory lock, so two instances (or two admins) never interleave an edit; an
edit reads the record afresh inside the transaction, applies the pure edit
(which checks versions, ``_record``), checks the result with the cores' own
rules, and writes only the rows that changed. Empty tables are seeded from the
settings first (the first start).

``LocalCopy``: the last good record as a JSON file in ``state_dir``, written
after every load and edit (atomically: a temporary file renamed over the old
one), read back strictly, so the service starts with the centre as it was
when PostgreSQL is down.

Neither sits on the call path: the cores get a record as a ``ConfigChanged`` /
``DirectoryChanged`` in their inbox.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from ._record import (
    AgencyItem,
    CentreRecord,
    Edit,
    Invalid,
    PriorityNumberItem,
    QueueItem,
    TakerItem,
)

log = structlog.get_logger(__name__)

# Any constant shared by every instance; "SIAGACFG" in ASCII.
_LOCK_KEY = 0x5349414743464720


class StoreUnavailable(Exception):
    """PostgreSQL could not be reached or the record there is unusable (HTTP 503)."""


class ConfigStore(Protocol):
    """What the keeper needs of a store (``PgConfigStore``; tests have a fake in memory)."""

    async def load(self) -> CentreRecord: ...

    async def edit(self, edit: Edit) -> tuple[CentreRecord, CentreRecord]: ...


def empty_like(seed: CentreRecord) -> CentreRecord:
    return replace(seed, queues={}, takers={}, agencies={}, priority_numbers={})


class PgConfigStore:
    def __init__(self, dsn: str, seed: CentreRecord, *, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._seed = seed
        self._timeout_s = timeout_s

    async def load(self) -> CentreRecord:
        """The record (seeding empty tables from the settings first)."""
        return (await self._transaction(None))[1]

    async def edit(self, edit: Edit) -> tuple[CentreRecord, CentreRecord]:
        """Apply ``edit`` to the record as it is now; return (before, after).

        ``edit``'s own exceptions (``Stale``, ``Conflict``, ``NotFound``,
        ``Invalid``) roll the transaction back and pass through."""
        return await self._transaction(edit)

    async def _transaction(self, edit: Edit | None) -> tuple[CentreRecord, CentreRecord]:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            raise StoreUnavailable(f"PostgreSQL unreachable: {exc}") from None
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                before = await self._seeded(conn)
                if edit is None:
                    return before, before
                after = edit(before).check()
                await _write(conn, before, after)
                return before, after
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise Invalid(f"refused by the database: {exc}") from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _seeded(self, conn: asyncpg.Connection) -> CentreRecord:
        current = await self._read(conn)
        target = current
        if not current.queues:
            target = replace(
                target,
                queues=self._seed.queues,
                takers=self._seed.takers,
                priority_numbers=self._seed.priority_numbers,
            )
        if not current.agencies and not self._seed.agencies_fixed:
            target = replace(target, agencies=self._seed.agencies)
        if target is current:
            return current
        target.check()
        await _write(conn, current, target)
        log.info(
            "centre.seeded",
            queues=not current.queues,
            agencies=not current.agencies and not self._seed.agencies_fixed,
        )
        return target

    async def _read(self, conn: asyncpg.Connection) -> CentreRecord:
        try:
            return await _read(conn, self._seed)
        except ValidationError as exc:
            raise StoreUnavailable(f"the record in PostgreSQL is invalid: {_first(exc)}") from None


async def _read(conn: asyncpg.Connection, seed: CentreRecord) -> CentreRecord:
    queues = {
        r["name"]: QueueItem.model_validate(
            json.loads(r["settings"]) | {"name": r["name"], "version": r["version"]}
        )
        for r in await conn.fetch(
            "SELECT name, settings::text AS settings, version FROM queues ORDER BY position, name"
        )
    }
    takers = {
        r["taker_id"]: TakerItem(
            id=r["taker_id"],
            endpoint=r["endpoint"],
            queues=list(r["queues"]),
            logged_in=r["logged_in"],
            version=r["version"],
        )
        for r in await conn.fetch(
            "SELECT taker_id, endpoint, queues, logged_in, version FROM call_takers"
            " ORDER BY position, taker_id"
        )
    }
    numbers = {
        (r["queue"], r["number"]): PriorityNumberItem(
            queue=r["queue"],
            number=r["number"],
            priority=r["priority"],
            label=r["label"],
            version=r["version"],
        )
        for r in await conn.fetch(
            "SELECT queue, number, priority, label, version FROM priority_numbers"
            " ORDER BY queue, number"
        )
    }
    agencies = dict(seed.agencies)
    if not seed.agencies_fixed:
        agencies = {
            r["code"]: AgencyItem(
                code=r["code"],
                name=r["name"],
                endpoints=list(r["endpoints"]),
                digit=r["digit"],
                strategy=r["ring_strategy"],
                ring_timeout_s=r["ring_timeout_s"],
                fallback=r["fallback"] or "",
                role=r["join_role"],
                mass_incident=r["mass_incident"],
                enabled=r["enabled"],
                version=r["version"],
            )
            for r in await conn.fetch(
                "SELECT code, name, digit, endpoints, ring_strategy, ring_timeout_s, fallback,"
                " join_role, mass_incident, enabled, version FROM agencies ORDER BY code"
            )
        }
    return replace(seed, queues=queues, takers=takers, agencies=agencies, priority_numbers=numbers)


def _queue_settings(q: QueueItem) -> str:
    return json.dumps(q.model_dump(mode="json", exclude={"name", "version", "priority_numbers"}))


async def _write(conn: asyncpg.Connection, before: CentreRecord, after: CentreRecord) -> None:
    """Write the rows that differ between ``before`` and ``after`` (and the order)."""
    gone_numbers = [k for k in before.priority_numbers if k not in after.priority_numbers]
    for queue, number in gone_numbers:
        await conn.execute(
            "DELETE FROM priority_numbers WHERE queue = $1 AND number = $2", queue, number
        )
    for taker_id in before.takers.keys() - after.takers.keys():
        await conn.execute("DELETE FROM call_takers WHERE taker_id = $1", taker_id)
    for name in before.queues.keys() - after.queues.keys():
        await conn.execute("DELETE FROM queues WHERE name = $1", name)
    for name, q in _changed(before.queues, after.queues):
        await conn.execute(
            "INSERT INTO queues (name, settings, version) VALUES ($1, $2::jsonb, $3)"
            " ON CONFLICT (name) DO UPDATE SET settings = EXCLUDED.settings,"
            " version = EXCLUDED.version, updated_at = now()",
            name,
            _queue_settings(q),
            q.version,
        )
    for taker_id, t in _changed(before.takers, after.takers):
        await conn.execute(
            "INSERT INTO call_takers (taker_id, endpoint, queues, logged_in, version)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (taker_id) DO UPDATE SET endpoint = EXCLUDED.endpoint,"
            " queues = EXCLUDED.queues, logged_in = EXCLUDED.logged_in,"
            " version = EXCLUDED.version, updated_at = now()",
            taker_id,
            t.endpoint,
            t.queues,
            t.logged_in,
            t.version,
        )
    for (queue, number), p in _changed(before.priority_numbers, after.priority_numbers):
        await conn.execute(
            "INSERT INTO priority_numbers (queue, number, priority, label, version)"
            " VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (queue, number) DO UPDATE SET priority = EXCLUDED.priority,"
            " label = EXCLUDED.label, version = EXCLUDED.version, updated_at = now()",
            queue,
            number,
            p.priority,
            p.label,
            p.version,
        )
    for table, key, order in (
        ("queues", "name", list(after.queues)),
        ("call_takers", "taker_id", list(after.takers)),
    ):
        await conn.execute(
            f"UPDATE {table} SET position = x.pos FROM unnest($1::text[]) WITH ORDINALITY"  # noqa: S608 - table and column are ours
            f" AS x(k, pos) WHERE {table}.{key} = x.k AND {table}.position <> x.pos",
            order,
        )
    if not after.agencies_fixed:
        await _write_agencies(conn, before.agencies, after.agencies)


async def _write_agencies(
    conn: asyncpg.Connection, before: Mapping[str, AgencyItem], after: Mapping[str, AgencyItem]
) -> None:
    for code in before.keys() - after.keys():
        await conn.execute("DELETE FROM agencies WHERE code = $1", code)
    for code, a in _changed(before, after):
        await conn.execute(
            "INSERT INTO agencies (code, name, digit, endpoints, ring_strategy, ring_timeout_s,"
            " fallback, join_role, mass_incident, enabled, version)"
            " VALUES ($1, $2, $3, $4, $5, $6, NULLIF($7, ''), $8, $9, $10, $11)"
            " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, digit = EXCLUDED.digit,"
            " endpoints = EXCLUDED.endpoints, ring_strategy = EXCLUDED.ring_strategy,"
            " ring_timeout_s = EXCLUDED.ring_timeout_s, fallback = EXCLUDED.fallback,"
            " join_role = EXCLUDED.join_role, mass_incident = EXCLUDED.mass_incident,"
            " enabled = EXCLUDED.enabled, version = EXCLUDED.version",
            code,
            a.name,
            a.digit,
            a.endpoints,
            a.strategy.value,
            a.ring_timeout_s,
            a.fallback,
            a.role.value,
            a.mass_incident,
            a.enabled,
            a.version,
        )


def _changed(before: Mapping[Any, Any], after: Mapping[Any, Any]) -> list[tuple[Any, Any]]:
    return [(k, v) for k, v in after.items() if before.get(k) != v]


def _first(exc: ValidationError) -> str:
    e = exc.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"


# ---- the local copy ------------------------------------------------------------


class _Copy(BaseModel):
    """The file's format; strict, like everything else that becomes configuration."""

    model_config = ConfigDict(extra="forbid")
    format: int = 1
    queues: list[QueueItem]
    takers: list[TakerItem]
    agencies: list[AgencyItem]
    priority_numbers: list[PriorityNumberItem]


class LocalCopy:
    """The last good record, in ``state_dir`` (``centre-config.json``)."""

    NAME = "centre-config.json"

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.NAME

    def save(self, record: CentreRecord) -> None:
        body = _Copy(
            queues=list(record.queues.values()),
            takers=list(record.takers.values()),
            agencies=list(record.agencies.values()),
            priority_numbers=list(record.priority_numbers.values()),
        ).model_dump_json(indent=1)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def load(self, seed: CentreRecord) -> CentreRecord | None:
        """The copy, checked by the cores' rules; ``None`` if there is none or it is unusable."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("centre.copy_unreadable", path=str(self.path), error=str(exc))  # noqa: TRY400 - no traceback wanted
            return None
        try:
            copy = _Copy.model_validate_json(raw)
            record = replace(
                seed,
                queues={q.name: q for q in copy.queues},
                takers={t.id: t for t in copy.takers},
                agencies=seed.agencies
                if seed.agencies_fixed
                else {a.code: a for a in copy.agencies},
                priority_numbers={(p.queue, p.number): p for p in copy.priority_numbers},
            )
            return record.check()
        except (ValidationError, ValueError) as exc:
            log.error("centre.copy_invalid", path=str(self.path), error=str(exc)[:500])  # noqa: TRY400 - no traceback wanted
            return None
