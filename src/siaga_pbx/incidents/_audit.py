"""The audit record: written through the outbox, read over ``GET /api/audit``.

- ``OutboxAuditSink`` is the service's ``audit.AuditSink``: each entry becomes
  an ``AppendAudit`` op in the durable local outbox, so the HTTP request (or
  the handset's feature code) never waits for PostgreSQL, and the relay
  writes the row exactly once whenever PostgreSQL is up.
- ``AuditStore`` queries the ``audit`` table (migration 0008), newest first,
  keyset-paginated.
- ``add_audit_routes``: ``GET /api/audit`` for admins and supervisors, a
  declared route (``adapters.routes``: in the OpenAPI document), behind the
  incident API's auth (``add_incident_routes`` first).
- ``write_audit_now``: for a process without an outbox (``siaga-pbx purge``),
  which needs PostgreSQL for its work anyway.

| query     | meaning                                                        |
| --------- | -------------------------------------------------------------- |
| from, to  | ISO 8601 with an offset; ``from`` inclusive, ``to`` exclusive   |
| user      | the actor: ``who``, ``username`` or ``user_id``, exactly        |
| action    | exactly (``taker.logout``), or a prefix ending in ``.``         |
| target    | exactly (``taker:taker2``, ``call:<id>``)                       |
| outcome   | accepted, refused or failed                                     |
| limit     | 1..500 (default 100); ``cursor``: the previous page's           |

Invalid or unknown parameters are a 422 problem naming each one.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import structlog
from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from .. import auth
from ..adapters import routes
from ..adapters.problems import FieldError, Problem
from ..audit import AuditEntry
from ._api_models import _storable
from ._apply import insert_audit
from ._ops import AppendAudit
from ._outbox import Outbox
from ._store import IncidentStore, _row

__all__ = [
    "AuditPage",
    "AuditParams",
    "AuditQuery",
    "AuditStore",
    "OutboxAuditSink",
    "add_audit_routes",
    "audit_op",
    "write_audit_now",
]

log = structlog.get_logger(__name__)

_READERS = frozenset({"admin", "supervisor"})
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


def audit_op(entry: AuditEntry) -> AppendAudit:
    """The outbox op of one audit entry (raises ``ValueError`` if it is malformed)."""
    return AppendAudit(
        at=entry.at,
        who=entry.who,
        role=entry.role,
        action=entry.action,
        target=entry.target,
        outcome=entry.outcome,
        status=entry.status,
        reason=entry.reason,
        user_id=entry.user_id,
        username=entry.username,
        source=entry.source,
        request_id=entry.request_id,
        before=entry.before,
        after=entry.after,
    )


class OutboxAuditSink:
    """``audit.AuditSink`` over the durable local outbox.

    ``write`` returns once the op is fsynced locally. ``post`` is for callers
    that cannot wait (the consumer's feature-code hook): the write runs as a
    task; ``flush`` waits for every posted write (call it before the outbox
    closes)."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._posted: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<OutboxAuditSink {self.outbox!r} posted={len(self._posted)}>"

    async def write(self, entry: AuditEntry) -> None:
        await self.outbox.append(audit_op(entry))

    def post(self, entry: AuditEntry) -> None:
        task = asyncio.get_running_loop().create_task(self._write_logged(entry))
        self._posted.add(task)
        task.add_done_callback(self._posted.discard)

    async def flush(self) -> None:
        if self._posted:
            await asyncio.gather(*self._posted, return_exceptions=True)

    async def _write_logged(self, entry: AuditEntry) -> None:
        try:
            await self.write(entry)
        except Exception as exc:  # noqa: BLE001 - a task nobody awaits: the log keeps it
            log.error(  # noqa: TRY400
                "audit.write_failed",
                error=repr(exc)[:300],
                audit_action=entry.action,
                audit_who=entry.who,
                audit_target=entry.target,
                audit_outcome=entry.outcome,
            )


async def write_audit_now(dsn: str, entry: AuditEntry) -> None:
    """Insert one audit row straight into PostgreSQL (raises if it is down)."""
    op = audit_op(entry)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await insert_audit(conn, op)
    finally:
        await conn.close()


# ---- reading -------------------------------------------------------------------


class AuditParams(BaseModel):
    """Query string of GET /api/audit. Unknown parameters are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    at_from: AwareDatetime | None = Field(default=None, alias="from")
    at_to: AwareDatetime | None = Field(default=None, alias="to")
    user: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    action: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    target: Annotated[str, Field(min_length=1, max_length=512)] | None = None
    outcome: Literal["accepted", "refused", "failed"] | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 100
    cursor: Annotated[str, Field(min_length=1, max_length=512)] | None = None

    @field_validator("user", "action", "target")
    @classmethod
    def _text_storable(cls, value: str | None) -> str | None:
        return None if value is None else _storable(value)


@dataclass(frozen=True, slots=True)
class AuditQuery:
    at_from: datetime | None = None
    at_to: datetime | None = None
    user: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: str | None = None
    limit: int = 100
    cursor: tuple[datetime, int] | None = None


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


def _encode_cursor(at: datetime, row_id: int) -> str:
    raw = json.dumps([at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        when = datetime.fromisoformat(at)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor returned by this API") from exc
    if when.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
        raise ValueError("not a cursor returned by this API")
    return when, row_id


_SELECT = (
    "SELECT id, at, who, user_id, username, role, action, target, outcome, status, reason,"
    " before, after, source, request_id, recorded_at FROM audit"
    " WHERE ($1::timestamptz IS NULL OR at >= $1)"
    "   AND ($2::timestamptz IS NULL OR at < $2)"
    "   AND ($3::text IS NULL OR who = $3 OR (username <> '' AND username = $3)"
    "        OR (user_id <> '' AND user_id = $3))"
    # 'taker.' is a prefix (every taker action); anything else must match exactly.
    "   AND ($4::text IS NULL OR action = $4"
    "        OR (right($4, 1) = '.' AND starts_with(action, $4)))"
    "   AND ($5::text IS NULL OR target = $5)"
    "   AND ($6::text IS NULL OR outcome = $6)"
    "   AND ($7::timestamptz IS NULL OR (at, id) < ($7, $8::bigint))"
    " ORDER BY at DESC, id DESC LIMIT $9"
)


class AuditStore:
    """Reads the audit table over the incident store's pool (no pool of its own)."""

    def __init__(self, store: IncidentStore) -> None:
        self._store = store

    async def query(self, q: AuditQuery) -> AuditPage:
        """Newest first (by the time the action was taken), keyset-paginated."""
        cursor_at, cursor_id = q.cursor if q.cursor is not None else (None, None)
        rows = await (await self._store.pool()).fetch(
            _SELECT,
            q.at_from,
            q.at_to,
            q.user,
            q.action,
            q.target,
            q.outcome,
            cursor_at,
            cursor_id,
            q.limit + 1,
        )
        more = len(rows) > q.limit
        rows = rows[: q.limit]
        items = [_row(r, json_columns=("before", "after")) for r in rows]
        next_cursor = _encode_cursor(rows[-1]["at"], rows[-1]["id"]) if more else None
        return AuditPage(items, next_cursor)


class AuditPageBody(BaseModel):
    """The answer of GET /api/audit (for the OpenAPI document)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


_AUDIT_STORE = web.AppKey("audit_store", AuditStore)
routes_ = routes.RouteTable("audit")


def add_audit_routes(app: web.Application, store: IncidentStore) -> None:
    """Mount ``GET /api/audit`` (admin, supervisor) on ``app``."""
    if auth.TOKENS not in app:
        raise RuntimeError("add_incident_routes first: the audit route shares its auth")
    app[_AUDIT_STORE] = AuditStore(store)
    routes_.install(app)


@routes_.get(
    "/api/audit",
    summary="The audit of every action, newest first, a page at a time",
    description="Who did what: every state-changing request, accepted, refused or failed,"
    " and every handset feature code (docs/AUDIT.md).",
    roles=_READERS,
    query=AuditParams,
    response=AuditPageBody,
    problems=(503,),
)
async def _list_audit(request: web.Request) -> web.StreamResponse:
    params = routes.query(request, AuditParams)
    try:
        cursor = None if params.cursor is None else _decode_cursor(params.cursor)
    except ValueError as exc:
        raise Problem(
            422,
            "the request is not valid",
            errors=[FieldError(in_="query", field="cursor", message=str(exc))],
        ) from None
    q = AuditQuery(
        at_from=params.at_from,
        at_to=params.at_to,
        user=params.user,
        action=params.action,
        target=params.target,
        outcome=params.outcome,
        limit=params.limit,
        cursor=cursor,
    )
    try:
        page = await request.app[_AUDIT_STORE].query(q)
    except _UNAVAILABLE as exc:
        log.error("audit_api_db_unavailable", error=str(exc)[:300])  # noqa: TRY400
        raise Problem(
            503,
            "audit log unavailable: PostgreSQL cannot be reached. Actions are still"
            " audited (kept in the local outbox) and appear here once it is back.",
        ) from None
    return web.json_response({"items": page.items, "next_cursor": page.next_cursor})
