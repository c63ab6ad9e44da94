"""Retention: delete what the policy says must go, and audit every deletion.

UU PDP requires deletion when retention ends. Order matters:
1. Recordings past ``recordings_days`` (and every recording of an incident
   about to be purged): the FILE is deleted first, then its row, in a
   transaction that writes the audit entry. If the row deletion fails the
   next run finds the file already gone and finishes the job; the reverse
   order could leave an unreferenced file nobody would ever delete.
2. Incidents past ``incidents_days``: calls, links, callbacks and timeline
   cascade. The timeline refuses deletes unless the transaction set
   ``siaga.retention_purge``; only this function does that.
   ``recordings.incident_id`` is ON DELETE RESTRICT, so an incident whose
   recording file could not be deleted stays (and is reported).
3. Timeline entries and callbacks that never got an incident (their
   OpenIncident was dead-lettered) past ``incidents_days``.
The audit keeps ids, times and counts, never caller numbers or names.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import structlog

from ._apply import epoch_to_datetime

__all__ = ["PurgeReport", "purge"]

log = structlog.get_logger(__name__)

_DAY_S = 86400.0


@dataclass(slots=True)
class PurgeReport:
    """What one purge run deleted, and what it could not."""

    dry_run: bool = False  # True: counts of what WOULD go; nothing was deleted
    recordings_deleted: int = 0
    files_deleted: int = 0
    files_missing: int = 0
    incidents_deleted: int = 0
    orphan_timeline_deleted: int = 0
    orphan_callbacks_deleted: int = 0
    errors: list[str] = field(default_factory=list)


def _unlink(path: str) -> bool:
    """Delete a file; False if it was already gone."""
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True


async def purge(
    dsn: str,
    *,
    recordings_days: float,
    incidents_days: float,
    now: float,
    reason: str = "retention policy",
    dry_run: bool = False,
) -> PurgeReport:
    """Delete recordings older than ``recordings_days`` and incidents older than
    ``incidents_days`` (relative to epoch ``now``), auditing each deletion.
    With ``dry_run`` only count what would go (nothing deleted, nothing audited)."""
    if recordings_days < 0 or incidents_days < 0:
        raise ValueError("retention periods must be >= 0 days")
    rec_cutoff = epoch_to_datetime(max(now - recordings_days * _DAY_S, 0.0))
    inc_cutoff = epoch_to_datetime(max(now - incidents_days * _DAY_S, 0.0))
    report = PurgeReport(dry_run=dry_run)
    conn = await asyncpg.connect(dsn)
    try:
        if dry_run:
            await _count_only(conn, rec_cutoff, inc_cutoff, report)
            return report
        await _purge_recordings(conn, rec_cutoff, inc_cutoff, reason, report)
        await _purge_incidents(conn, inc_cutoff, reason, report)
        await _purge_orphans(conn, inc_cutoff, reason, report)
    finally:
        await conn.close()
    log.info("retention_purge_done", **{k: getattr(report, k) for k in report.__slots__})
    return report


async def _count_only(
    conn: asyncpg.Connection, rec_cutoff: datetime, inc_cutoff: datetime, report: PurgeReport
) -> None:
    rows = await conn.fetch(_RECORDINGS_DUE, rec_cutoff, inc_cutoff)
    exists = [await asyncio.to_thread(Path(r["path"]).exists) for r in rows]
    report.recordings_deleted = len(rows)
    report.files_deleted = sum(exists)
    report.files_missing = len(rows) - sum(exists)
    report.incidents_deleted = await conn.fetchval(
        "SELECT count(*) FROM incidents WHERE opened_at < $1", inc_cutoff
    )
    report.orphan_timeline_deleted = await conn.fetchval(
        "SELECT count(*) FROM timeline WHERE incident_id IS NULL AND at < $1", inc_cutoff
    )
    report.orphan_callbacks_deleted = await conn.fetchval(
        "SELECT count(*) FROM callbacks WHERE incident_id IS NULL AND abandoned_at < $1",
        inc_cutoff,
    )


_RECORDINGS_DUE = (
    "SELECT r.id, r.path, r.sha256, r.started_at, r.incident_id FROM recordings r"
    " LEFT JOIN incidents i ON i.id = r.incident_id"
    " WHERE r.started_at < $1 OR i.opened_at < $2 ORDER BY r.started_at"
)


async def _purge_recordings(
    conn: asyncpg.Connection,
    rec_cutoff: datetime,
    inc_cutoff: datetime,
    reason: str,
    report: PurgeReport,
) -> None:
    rows = await conn.fetch(_RECORDINGS_DUE, rec_cutoff, inc_cutoff)
    for r in rows:
        try:
            existed = await asyncio.to_thread(_unlink, r["path"])
        except OSError as exc:
            msg = f"recording {r['id']}: cannot delete file: {exc}"
            log.error(  # noqa: TRY400 - the message says it all; no traceback wanted
                "retention_file_delete_failed", recording_id=str(r["id"]), error=str(exc)
            )
            report.errors.append(msg)
            continue
        report.files_deleted += existed
        report.files_missing += not existed
        async with conn.transaction():
            gone = await conn.fetchval("DELETE FROM recordings WHERE id = $1 RETURNING id", r["id"])
            if gone is not None:
                await _audit(
                    conn,
                    "recording",
                    str(r["id"]),
                    reason,
                    {
                        "path": r["path"],
                        "sha256": r["sha256"],
                        "started_at": r["started_at"].isoformat(),
                        "incident_id": None if r["incident_id"] is None else str(r["incident_id"]),
                        "file": "deleted" if existed else "already missing",
                    },
                )
                report.recordings_deleted += 1


async def _purge_incidents(
    conn: asyncpg.Connection, inc_cutoff: datetime, reason: str, report: PurgeReport
) -> None:
    rows = await conn.fetch(
        "SELECT id, opened_at FROM incidents WHERE opened_at < $1 ORDER BY opened_at", inc_cutoff
    )
    for r in rows:
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('siaga.retention_purge', 'on', true)")
                counts = await conn.fetchrow(
                    "SELECT (SELECT count(*) FROM calls WHERE incident_id = $1) AS calls,"
                    " (SELECT count(*) FROM timeline WHERE incident_id = $1) AS timeline,"
                    " (SELECT count(*) FROM callbacks WHERE incident_id = $1) AS callbacks",
                    r["id"],
                )
                assert counts is not None
                gone = await conn.fetchval(
                    "DELETE FROM incidents WHERE id = $1 RETURNING id", r["id"]
                )
                if gone is None:
                    continue
                await _audit(
                    conn,
                    "incident",
                    str(r["id"]),
                    reason,
                    {
                        "opened_at": r["opened_at"].isoformat(),
                        "calls": counts["calls"],
                        "timeline_entries": counts["timeline"],
                        "callbacks": counts["callbacks"],
                    },
                )
                report.incidents_deleted += 1
        except asyncpg.ForeignKeyViolationError as exc:
            # A recording row survived (its file could not be deleted above).
            msg = f"incident {r['id']}: kept, a recording still references it: {exc}"
            log.error(  # noqa: TRY400 - an expected consequence of the above
                "retention_incident_kept", incident_id=str(r["id"]), error=str(exc)
            )
            report.errors.append(msg)


async def _purge_orphans(
    conn: asyncpg.Connection, inc_cutoff: datetime, reason: str, report: PurgeReport
) -> None:
    async with conn.transaction():
        await conn.execute("SELECT set_config('siaga.retention_purge', 'on', true)")
        n_timeline = len(
            await conn.fetch(
                "DELETE FROM timeline WHERE incident_id IS NULL AND at < $1 RETURNING id",
                inc_cutoff,
            )
        )
        if n_timeline:
            await _audit(conn, "timeline", "without incident", reason, {"entries": n_timeline})
        report.orphan_timeline_deleted = n_timeline
        callbacks = await conn.fetch(
            "DELETE FROM callbacks WHERE incident_id IS NULL AND abandoned_at < $1"
            " RETURNING call_id",
            inc_cutoff,
        )
        for cb in callbacks:
            await _audit(conn, "callback", cb["call_id"], reason, {"incident": None})
        report.orphan_callbacks_deleted = len(callbacks)


async def _audit(
    conn: asyncpg.Connection, kind: str, object_id: str, reason: str, detail: dict[str, object]
) -> None:
    await conn.execute(
        "INSERT INTO purge_audit (object_kind, object_id, reason, detail)"
        " VALUES ($1, $2, $3, $4::jsonb)",
        kind,
        object_id,
        reason,
        json.dumps(detail),
    )
