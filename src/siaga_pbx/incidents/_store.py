"""``IncidentStore``: the read side and the human edits (classification,
callbacks done) of the incident record, over an asyncpg pool.

Results are JSON-ready dicts (times as ISO 8601 strings, ids as strings), as
the REST API returns them. Every query is parameterised; the only SQL built
at run time joins column names taken from a fixed whitelist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Self

import asyncpg

from siaga_pbx.core import CallbackEntry

from ._apply import epoch_to_datetime

__all__ = [
    "CLASSIFICATION_FIELDS",
    "HistoryEntry",
    "IncidentPage",
    "IncidentQuery",
    "IncidentStore",
    "InvalidCursor",
    "RecordingRow",
    "decode_cursor",
    "encode_cursor",
]

JsonDict = dict[str, Any]

# Columns a PATCH may change, in a fixed order (the whitelist for dynamic SQL).
CLASSIFICATION_FIELDS: tuple[str, ...] = (
    "category",
    "priority",
    "disposition",
    "status",
    "address_text",
    "notes",
    "responders",
)

_CALLBACK_COLUMNS = (
    "call_id, incident_id, number, arrived_at, abandoned_at, wait_s, queue,"
    ' where_abandoned AS "where", status, status_at, status_by,'
    " resolved_at, resolved_by, resolution, resolution_note"
)

_INCIDENT_COLUMNS = (
    "i.id, i.opened_at, i.category, i.priority, i.status, i.disposition, i.address_text,"
    " i.notes, i.responders, i.lat, i.lon, i.accuracy_m, i.location_source, i.location_at,"
    " i.language, i.updated_at"
)


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not produce."""


def encode_cursor(opened_at: datetime, incident_id: uuid.UUID) -> str:
    """Opaque keyset cursor: the last item's (opened_at, id)."""
    raw = json.dumps([opened_at.isoformat(), str(incident_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of ``encode_cursor``; ``InvalidCursor`` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, ident = json.loads(raw)
        when = datetime.fromisoformat(at)
        ident_uuid = uuid.UUID(ident)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidCursor("not a cursor returned by this API") from exc
    if when.tzinfo is None:
        raise InvalidCursor("not a cursor returned by this API")
    return when, ident_uuid


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _row(record: asyncpg.Record, *, json_columns: Sequence[str] = ()) -> JsonDict:
    out: JsonDict = {}
    for key, value in record.items():
        if key in json_columns and isinstance(value, str):
            out[key] = json.loads(value)
        else:
            out[key] = _jsonable(value)
    return out


def _call_row(record: asyncpg.Record) -> JsonDict:
    """A call, its raw SIP headers as base64 (``from_header_b64``,
    ``pai_header_b64``; null when not captured) beside the cleaned text."""
    out = _row(record)
    for column, key in (
        ("from_header_raw", "from_header_b64"),
        ("pai_header_raw", "pai_header_b64"),
    ):
        out.pop(column, None)
        raw = record[column]
        out[key] = None if raw is None else base64.b64encode(bytes(raw)).decode("ascii")
    return out


@dataclass(frozen=True, slots=True)
class IncidentQuery:
    """Filters for ``list_incidents``; ``opened_from`` inclusive, ``opened_to`` exclusive."""

    opened_from: datetime | None = None
    opened_to: datetime | None = None
    category: str | None = None
    disposition: str | None = None
    number: str | None = None
    limit: int = 50
    cursor: tuple[datetime, uuid.UUID] | None = None


@dataclass(frozen=True, slots=True)
class IncidentPage:
    items: list[JsonDict]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class RecordingRow:
    id: uuid.UUID
    call_id: str
    path: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One earlier call from the same number."""

    incident_id: uuid.UUID
    call_id: str
    arrived_at: datetime
    category: str | None
    disposition: str | None


class IncidentStore:
    """Reads and edits incidents in PostgreSQL (the schema of ``migrate``).

    Give it a DSN (the pool is then created on first use, so the service starts
    even while PostgreSQL is down, and a failed attempt is retried on the next
    request) or an existing ``asyncpg.Pool`` (which the caller owns).
    """

    def __init__(self, source: str | asyncpg.Pool, *, min_size: int = 1, max_size: int = 5) -> None:
        self._dsn = source if isinstance(source, str) else None
        self._pool: asyncpg.Pool | None = None if isinstance(source, str) else source
        self._owns_pool = isinstance(source, str)
        self._min_size = min_size
        self._max_size = max_size
        self._pool_lock = asyncio.Lock()

    def __repr__(self) -> str:
        size = "not connected" if self._pool is None else self._pool.get_size()
        return f"<IncidentStore pool={size}>"

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 5) -> Self:
        """A store whose pool is already open; ``close()`` it when done."""
        store = cls(dsn, min_size=min_size, max_size=max_size)
        await store.pool()
        return store

    async def pool(self) -> asyncpg.Pool:
        """The connection pool, created now if needed (raises if PostgreSQL is down)."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                assert self._dsn is not None
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    command_timeout=10.0,
                    timeout=5.0,
                )
            return self._pool

    async def close(self) -> None:
        """Close the pool if this store created it."""
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await pool.close()

    # ---- incidents ---------------------------------------------------------

    async def list_incidents(self, q: IncidentQuery) -> IncidentPage:
        """Newest first, keyset-paginated, with the first call's derived times."""
        cursor_at, cursor_id = q.cursor if q.cursor is not None else (None, None)
        rows = await (await self.pool()).fetch(
            f"SELECT {_INCIDENT_COLUMNS},"  # noqa: S608 - a constant column list, no input
            "   fc.call_id, fc.caller_number, fc.caller_name, fc.pai, fc.best_number,"
            "   ct.answered_at, ct.wait_s, ct.talk_s,"
            "   (SELECT count(*) FROM calls c3 WHERE c3.incident_id = i.id) AS call_count"
            " FROM incidents i"
            " LEFT JOIN LATERAL (SELECT c.call_id, c.caller_number, c.caller_name, c.pai,"
            "   c.best_number FROM calls c WHERE c.incident_id = i.id"
            "   ORDER BY c.arrived_at, c.call_id LIMIT 1) fc ON true"
            " LEFT JOIN call_times ct ON ct.call_id = fc.call_id"
            " WHERE ($1::timestamptz IS NULL OR i.opened_at >= $1)"
            "   AND ($2::timestamptz IS NULL OR i.opened_at < $2)"
            "   AND ($3::text IS NULL OR i.category = $3)"
            "   AND ($4::text IS NULL OR i.disposition = $4)"
            "   AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM calls c2"
            "        WHERE c2.incident_id = i.id"
            "          AND (c2.best_number = $5 OR c2.caller_number = $5 OR c2.pai = $5)))"
            "   AND ($6::timestamptz IS NULL OR (i.opened_at, i.id) < ($6, $7::uuid))"
            " ORDER BY i.opened_at DESC, i.id DESC"
            " LIMIT $8",
            q.opened_from,
            q.opened_to,
            q.category,
            q.disposition,
            q.number,
            cursor_at,
            cursor_id,
            q.limit + 1,
        )
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        items = [self._list_item(r) for r in rows]
        next_cursor = encode_cursor(rows[-1]["opened_at"], rows[-1]["id"]) if more else None
        return IncidentPage(items, next_cursor)

    @staticmethod
    def _list_item(r: asyncpg.Record) -> JsonDict:
        item = _row(r)
        caller = {
            "call_id": item.pop("call_id"),
            "number": item.pop("caller_number"),
            "name": item.pop("caller_name"),
            "pai": item.pop("pai"),
            "best_number": item.pop("best_number"),
        }
        item["caller"] = caller
        return item

    async def get_incident(self, incident_id: uuid.UUID) -> JsonDict | None:
        """One incident with its calls (and derived times), timeline in order,
        recordings and links (both directions)."""
        async with (await self.pool()).acquire() as conn:
            head = await conn.fetchrow(
                f"SELECT {_INCIDENT_COLUMNS} FROM incidents i WHERE i.id = $1",  # noqa: S608
                incident_id,
            )
            if head is None:
                return None
            calls = await conn.fetch(
                "SELECT c.call_id, c.caller_number, c.caller_name, c.pai, c.best_number,"
                " c.caller_number_raw, c.caller_name_raw, c.pai_raw,"
                " c.from_header_raw, c.pai_header_raw, c.trunk, c.queue,"
                " c.language, ct.arrived_at, ct.answered_at, ct.ended_at, ct.taker_id,"
                " ct.wait_s, ct.talk_s, c.hangup_side, c.hangup_cause"
                " FROM calls c JOIN call_times ct USING (call_id)"
                " WHERE c.incident_id = $1 ORDER BY c.arrived_at, c.call_id",
                incident_id,
            )
            timeline = await conn.fetch(
                "SELECT id, call_id, stage, at, detail FROM timeline"
                " WHERE incident_id = $1 ORDER BY at, id",
                incident_id,
            )
            recordings = await conn.fetch(
                "SELECT id, call_id, started_at, ended_at, duration_s, size_bytes, sha256,"
                " empty FROM recordings WHERE incident_id = $1 ORDER BY started_at, id",
                incident_id,
            )
            links = await conn.fetch(
                "SELECT linked_incident_id AS incident_id, kind, 'to' AS direction, created_at"
                " FROM incident_links WHERE incident_id = $1"
                " UNION ALL"
                " SELECT incident_id, kind, 'from', created_at"
                " FROM incident_links WHERE linked_incident_id = $1"
                " ORDER BY created_at",
                incident_id,
            )
        out = _row(head)
        out["calls"] = [_call_row(c) for c in calls]
        out["timeline"] = [_row(t, json_columns=("detail",)) for t in timeline]
        out["recordings"] = [_row(r) for r in recordings]
        out["links"] = [_row(link) for link in links]
        return out

    async def classify(
        self, incident_id: uuid.UUID, changes: Mapping[str, object], who: str
    ) -> JsonDict | None:
        """Apply a validated classification; append one audit entry naming
        ``who`` with every field's old and new value. None if no such incident."""
        unknown = set(changes) - set(CLASSIFICATION_FIELDS)
        if unknown:
            raise ValueError(f"not classification fields: {sorted(unknown)}")
        async with (await self.pool()).acquire() as conn, conn.transaction():
            current = await conn.fetchrow(
                "SELECT category, priority, disposition, status, address_text, notes,"
                " responders FROM incidents WHERE id = $1 FOR UPDATE",
                incident_id,
            )
            if current is None:
                return None
            diff = {
                name: {"from": _jsonable(current[name]), "to": _jsonable(changes[name])}
                for name in CLASSIFICATION_FIELDS
                if name in changes and _jsonable(current[name]) != _jsonable(changes[name])
            }
            if diff:
                columns = [name for name in CLASSIFICATION_FIELDS if name in diff]
                assignments = ", ".join(f"{c} = ${n}" for n, c in enumerate(columns, start=2))
                await conn.execute(
                    f"UPDATE incidents SET {assignments}, updated_at = now()"  # noqa: S608 - whitelisted names
                    " WHERE id = $1",
                    incident_id,
                    *(changes[c] for c in columns),
                )
                await conn.execute(
                    "INSERT INTO timeline (incident_id, call_id, stage, at, detail)"
                    " VALUES ($1, NULL, 'classified', now(), $2::jsonb)",
                    incident_id,
                    json.dumps({"who": who, "changes": diff}),
                )
        return await self.get_incident(incident_id)

    async def recent_history(
        self, number: str, since: float, *, limit: int = 20
    ) -> list[HistoryEntry]:
        """Calls from ``number`` (matched as PAI-or-From) since epoch ``since``,
        newest first. An empty number matches nothing."""
        if not number:
            return []
        rows = await (await self.pool()).fetch(
            "SELECT c.incident_id, c.call_id, c.arrived_at, i.category, i.disposition"
            " FROM calls c JOIN incidents i ON i.id = c.incident_id"
            " WHERE c.best_number = $1 AND c.arrived_at >= $2"
            " ORDER BY c.arrived_at DESC, c.call_id DESC LIMIT $3",
            number,
            epoch_to_datetime(since),
            limit,
        )
        return [
            HistoryEntry(
                r["incident_id"], r["call_id"], r["arrived_at"], r["category"], r["disposition"]
            )
            for r in rows
        ]

    # ---- recordings --------------------------------------------------------

    async def recording(self, recording_id: uuid.UUID) -> RecordingRow | None:
        r = await (await self.pool()).fetchrow(
            "SELECT id, call_id, path, sha256, size_bytes FROM recordings WHERE id = $1",
            recording_id,
        )
        if r is None:
            return None
        return RecordingRow(r["id"], r["call_id"], r["path"], r["sha256"], r["size_bytes"])

    # ---- callbacks ---------------------------------------------------------
    # Written by the journal (AddCallbackEntry, ResolveCallbackEntry): staff
    # resolve a callback through the core (incidents._callbacks_api), so the
    # live state and this record agree.

    async def pending_callbacks(self, *, limit: int = 200) -> list[JsonDict]:
        """Callbacks not yet resolved, longest-abandoned first."""
        rows = await (await self.pool()).fetch(
            f"SELECT {_CALLBACK_COLUMNS} FROM callbacks"  # noqa: S608 - constant columns
            " WHERE status <> 'resolved' ORDER BY abandoned_at, call_id LIMIT $1",
            limit,
        )
        return [_row(r) for r in rows]

    async def callback(self, call_id: str) -> JsonDict | None:
        """One callback, pending or resolved; None if the record has none."""
        row = await (await self.pool()).fetchrow(
            f"SELECT {_CALLBACK_COLUMNS} FROM callbacks WHERE call_id = $1",  # noqa: S608
            call_id,
        )
        return None if row is None else _row(row)

    async def pending_callback_entries(self, *, limit: int) -> list[CallbackEntry]:
        """The ``limit`` most recently abandoned pending callbacks, oldest
        first, as the core holds them (restored at service start)."""
        rows = await (await self.pool()).fetch(
            "SELECT call_id, number, arrived_at, abandoned_at, queue, where_abandoned"
            " FROM callbacks WHERE status <> 'resolved'"
            " ORDER BY abandoned_at DESC, call_id DESC LIMIT $1",
            limit,
        )
        return [
            CallbackEntry(
                r["call_id"],
                r["number"],
                r["arrived_at"].timestamp(),
                r["abandoned_at"].timestamp(),
                r["queue"],
                r["where_abandoned"],
            )
            for r in reversed(rows)
        ]
