"""Applying one outbox op to PostgreSQL, inside the caller's transaction.

Every statement is parameterised. Caller strings are made storable here (see
``_text``), keeping the original bytes when anything had to change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import asyncpg
import structlog

from ._ops import (
    AddCallbackEntry,
    AppendAudit,
    AppendTimeline,
    CloseCall,
    Op,
    OpenIncident,
    RegisterRecording,
    ResolveCallbackEntry,
)
from ._text import storable, storable_detail, storable_json

__all__ = ["apply_op", "epoch_to_datetime", "insert_audit"]

log = structlog.get_logger(__name__)


_INSERT_CALL = (
    "INSERT INTO calls (call_id, incident_id, caller_number, caller_name, pai,"
    " caller_number_raw, caller_name_raw, pai_raw, trunk, queue, language, arrived_at,"
    " from_header_raw, pai_header_raw)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
_INSERT_CALL_ONCE = _INSERT_CALL + " ON CONFLICT (call_id) DO NOTHING RETURNING 1"
_INSERT_CALL += " RETURNING 1"


def epoch_to_datetime(at: float) -> datetime:
    """UNIX epoch seconds (the service's clock) as an aware UTC datetime."""
    return datetime.fromtimestamp(at, UTC)


async def apply_op(conn: asyncpg.Connection, op: Op, *, repeat_window_s: float) -> None:
    """Write ``op``'s effect. Must run inside a transaction."""
    if isinstance(op, OpenIncident):
        await _open_incident(conn, op, repeat_window_s)
    elif isinstance(op, AppendTimeline):
        await _append_timeline(conn, op)
    elif isinstance(op, RegisterRecording):
        await _register_recording(conn, op)
    elif isinstance(op, AddCallbackEntry):
        await _add_callback(conn, op)
    elif isinstance(op, ResolveCallbackEntry):
        await _resolve_callback(conn, op)
    elif isinstance(op, AppendAudit):
        await insert_audit(conn, op)
    else:
        await _close_call(conn, op)


async def _open_incident(conn: asyncpg.Connection, op: OpenIncident, window_s: float) -> None:
    arrived = epoch_to_datetime(op.arrived_at)
    # An existing incident id means "attach this call to it" (mass events).
    await conn.execute(
        "INSERT INTO incidents (id, opened_at, language) VALUES ($1, $2, $3)"
        " ON CONFLICT (id) DO NOTHING",
        op.incident_id,
        arrived,
        storable(op.language)[0],
    )
    number, number_raw = storable(op.caller_number)
    name, name_raw = storable(op.caller_name)
    pai, pai_raw = storable(op.pai)
    # No ON CONFLICT on call_id for a new arrival: the same call opened twice
    # is a bug upstream, and must be parked loudly rather than silently ignored.
    # A recovered call (a restarted service found it in Asterisk) may or may
    # not have been journalled before the restart: opened at most once.
    inserted = await conn.fetchval(
        _INSERT_CALL_ONCE if op.recovered else _INSERT_CALL,
        op.call_id,
        op.incident_id,
        number,
        name,
        pai,
        number_raw,
        name_raw,
        pai_raw,
        storable(op.trunk)[0],
        storable(op.queue)[0],
        storable(op.language)[0],
        arrived,
        op.from_header_raw or None,
        op.pai_header_raw or None,
    )
    if inserted is None:
        return  # recovered, and journalled by the run before: nothing to add
    if op.recovered:
        # The run that answered it died before journalling it: its arrival
        # entry is written now, marked, so the timeline still begins here.
        detail = {"queue": storable(op.queue)[0], "number": pai or number, "recovered": True}
        await conn.execute(
            "INSERT INTO timeline (incident_id, call_id, stage, at, detail)"
            " VALUES ($1, $2, 'arrived', $3, $4::jsonb)",
            op.incident_id,
            op.call_id,
            arrived,
            json.dumps(detail),
        )
    best = pai or number  # same rule as the calls.best_number column
    if not best or window_s <= 0:
        return
    prior = await conn.fetchval(
        "SELECT incident_id FROM calls"
        " WHERE best_number = $1 AND incident_id <> $2"
        "   AND arrived_at >= $3::timestamptz - make_interval(secs => $4)"
        "   AND arrived_at <= $3::timestamptz"
        " ORDER BY arrived_at DESC, call_id DESC LIMIT 1",
        best,
        op.incident_id,
        arrived,
        float(window_s),
    )
    if prior is not None:
        await conn.execute(
            "INSERT INTO incident_links (incident_id, linked_incident_id, kind)"
            " VALUES ($1, $2, 'repeat_caller') ON CONFLICT DO NOTHING",
            op.incident_id,
            prior,
        )


async def _append_timeline(conn: asyncpg.Connection, op: AppendTimeline) -> None:
    incident_id = await conn.fetchval(  # one round trip: the incident is looked up inline
        "INSERT INTO timeline (incident_id, call_id, stage, at, detail)"
        " VALUES ((SELECT incident_id FROM calls WHERE call_id = $1), $1, $2, $3, $4::jsonb)"
        " RETURNING incident_id",
        op.call_id,
        op.stage,
        epoch_to_datetime(op.at),
        json.dumps(storable_detail(op.detail), allow_nan=False),
    )
    if op.stage == "abandoned" and incident_id is not None:
        # Classification is part of every call; an abandoned call is classified
        # as such until a taker says otherwise.
        await conn.execute(
            "UPDATE incidents SET disposition = 'abandoned', updated_at = now()"
            " WHERE id = $1 AND disposition IS NULL",
            incident_id,
        )


async def _register_recording(conn: asyncpg.Connection, op: RegisterRecording) -> None:
    # A file may be registered twice: by the service when its caller left, and
    # by the fallback sweeper after a hand-back (whichever runs). A recording
    # only grows, so the larger description wins; the same one changes nothing.
    await conn.execute(
        "INSERT INTO recordings (call_id, incident_id, path, started_at, ended_at,"
        " duration_s, size_bytes, sha256, empty)"
        " VALUES ($1, (SELECT incident_id FROM calls WHERE call_id = $1),"
        " $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (path) DO UPDATE SET ended_at = EXCLUDED.ended_at,"
        " duration_s = EXCLUDED.duration_s, size_bytes = EXCLUDED.size_bytes,"
        " sha256 = EXCLUDED.sha256, empty = EXCLUDED.empty"
        " WHERE recordings.call_id = EXCLUDED.call_id"
        " AND EXCLUDED.size_bytes > recordings.size_bytes",
        op.call_id,
        op.path,
        epoch_to_datetime(op.started_at),
        None if op.ended_at is None else epoch_to_datetime(op.ended_at),
        None if op.duration_s is None else float(op.duration_s),
        op.size_bytes,
        op.sha256,
        op.empty,
    )


async def _add_callback(conn: asyncpg.Connection, op: AddCallbackEntry) -> None:
    number, number_raw = storable(op.number)
    await conn.execute(
        "INSERT INTO callbacks (call_id, incident_id, number, number_raw, arrived_at,"
        " abandoned_at, queue, where_abandoned)"
        " VALUES ($1, (SELECT incident_id FROM calls WHERE call_id = $1), $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (call_id) DO NOTHING",
        op.call_id,
        number,
        number_raw,
        epoch_to_datetime(op.arrived_at),
        epoch_to_datetime(op.abandoned_at),
        storable(op.queue)[0],
        op.where,
    )


async def _resolve_callback(conn: asyncpg.Connection, op: ResolveCallbackEntry) -> None:
    # Only a pending callback is resolved, once: a second resolution (two
    # staff at once, a repeat) changes nothing and adds no timeline entry.
    who = storable(op.resolved_by)[0]
    note = storable(op.note)[0]
    row = await conn.fetchrow(
        "UPDATE callbacks SET status = 'resolved', resolved_at = $2, resolved_by = $3,"
        " resolution = $4, resolution_note = $5"
        " WHERE call_id = $1 AND status <> 'resolved' RETURNING incident_id",
        op.call_id,
        epoch_to_datetime(op.resolved_at),
        who,
        op.resolution,
        note,
    )
    if row is None:
        log.info("callback_resolution_unchanged", call_id=op.call_id)
        return
    detail = {"resolution": op.resolution, "who": who, "note": note}
    await conn.execute(
        "INSERT INTO timeline (incident_id, call_id, stage, at, detail)"
        " VALUES ($1, $2, 'callback_resolved', $3, $4::jsonb)",
        row["incident_id"],
        op.call_id,
        epoch_to_datetime(op.resolved_at),
        json.dumps(detail),
    )


_INSERT_AUDIT = (
    "INSERT INTO audit (at, who, user_id, username, role, action, target, outcome, status,"
    " reason, before, after, source, request_id)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13, $14)"
)


def _audit_json(value: object) -> str | None:
    return None if value is None else json.dumps(storable_json(value), allow_nan=False)


async def insert_audit(conn: asyncpg.Connection, op: AppendAudit) -> None:
    """Write one audit row. The relay does it for ``AppendAudit`` ops; the CLI,
    which has no outbox, calls it directly."""
    # Every string may come from a request (a path segment, a body field):
    # made storable like caller strings, never refused.
    await conn.execute(_INSERT_AUDIT, *_audit_row(op))


def _audit_row(op: AppendAudit) -> tuple[object, ...]:
    text = {
        name: storable(getattr(op, name))[0]
        for name in (
            "who",
            "user_id",
            "username",
            "role",
            "action",
            "target",
            "reason",
            "source",
            "request_id",
        )
    }
    return (
        epoch_to_datetime(op.at),
        text["who"],
        text["user_id"],
        text["username"],
        text["role"],
        text["action"],
        text["target"],
        op.outcome,
        op.status,
        text["reason"],
        _audit_json(op.before),
        _audit_json(op.after),
        text["source"],
        text["request_id"],
    )


async def _close_call(conn: asyncpg.Connection, op: CloseCall) -> None:
    status = await conn.execute(
        "UPDATE calls SET ended_at = $2, hangup_side = $3, hangup_cause = $4 WHERE call_id = $1",
        op.call_id,
        epoch_to_datetime(op.ended_at),
        storable(op.hangup_side)[0] or None,
        storable(op.hangup_cause)[0] or None,
    )
    if status == "UPDATE 0":
        # Only possible if the call's OpenIncident was dead-lettered; the
        # timeline still holds the hang-up, so nothing is lost, but say so.
        log.warning("close_call_for_unknown_call", call_id=op.call_id)
