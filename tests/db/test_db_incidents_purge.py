"""Retention purge against a real PostgreSQL and real files."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from siaga_pbx.core import CallbackEntry
from siaga_pbx.incidents import IncidentRecorder, Outbox, describe_recording, purge

from ._support import drain, fetch, fetchval, unique, write_wav

pytestmark = pytest.mark.timeout(60)

DAY = 86400.0


async def add_call(
    rec: IncidentRecorder,
    tmp_path: Path,
    *,
    age_days: float,
    now: float,
    number: str,
    recording: bool = True,
) -> tuple[uuid.UUID, str, Path]:
    """One call (with timeline, callback and optionally a WAV recording) aged ``age_days``."""
    call_id = unique("c")
    t0 = now - age_days * DAY
    incident = await rec.open_call(call_id, arrived_at=t0, number=number, name="Ibu Siti")
    await rec.timeline(call_id, "arrived", t0)
    await rec.timeline(call_id, "abandoned", t0 + 5)
    await rec.callback(CallbackEntry(call_id, number, t0, t0 + 5, "main", "waiting"))
    path = tmp_path / f"{call_id}.wav"
    if recording:
        write_wav(path, 0.5)
        await rec.recording(call_id, await describe_recording(path), started_at=t0, ended_at=t0 + 5)
    return incident, call_id, path


class TestPurge:
    async def test_deletes_expired_and_audits_each_deletion(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """Old incidents (with their calls, timeline, callbacks and recording files) and
        old recordings go; young ones stay; every deletion is audited without the
        caller's number; a dry run before deletes nothing and predicts the counts."""
        dsn = fresh_migrated_dsn
        now = time.time()
        async with Outbox(tmp_path / "o.db") as outbox:
            rec = IncidentRecorder(outbox)
            old_inc, old_call, old_wav = await add_call(
                rec, tmp_path, age_days=400, now=now, number="081100000001"
            )
            mid_inc, _, mid_wav = await add_call(
                rec, tmp_path, age_days=10, now=now, number="081100000002"
            )
            new_inc, _, new_wav = await add_call(
                rec, tmp_path, age_days=1, now=now, number="081100000003"
            )
            _, _, gone_wav = await add_call(
                rec, tmp_path, age_days=30, now=now, number="081100000004"
            )
            await rec.timeline("never-opened", "arrived", now - 400 * DAY)
            await drain(outbox, dsn)
        gone_wav.unlink()  # a recording whose file vanished before retention ran

        preview = await purge(dsn, recordings_days=7, incidents_days=365, now=now, dry_run=True)
        assert old_wav.exists()
        assert mid_wav.exists()
        assert await fetchval(dsn, "SELECT count(*) FROM purge_audit") == 0
        assert await fetchval(dsn, "SELECT count(*) FROM recordings") == 4

        report = await purge(dsn, recordings_days=7, incidents_days=365, now=now)
        assert preview.dry_run
        assert not report.dry_run
        assert (
            preview.recordings_deleted,
            preview.files_deleted,
            preview.files_missing,
            preview.incidents_deleted,
            preview.orphan_timeline_deleted,
        ) == (
            report.recordings_deleted,
            report.files_deleted,
            report.files_missing,
            report.incidents_deleted,
            report.orphan_timeline_deleted,
        )

        assert report.errors == []
        assert report.recordings_deleted == 3  # old, mid, gone
        assert report.files_deleted == 2
        assert report.files_missing == 1
        assert report.incidents_deleted == 1
        assert report.orphan_timeline_deleted == 1
        assert not old_wav.exists()
        assert not mid_wav.exists()
        assert new_wav.exists()
        incidents = {r["id"] for r in await fetch(dsn, "SELECT id FROM incidents")}
        assert old_inc not in incidents
        assert {mid_inc, new_inc} <= incidents
        assert await fetchval(dsn, "SELECT count(*) FROM recordings") == 1
        for table in ("calls", "timeline", "callbacks"):
            n = await fetchval(dsn, f"SELECT count(*) FROM {table} WHERE call_id = $1", old_call)
            assert n == 0, table
        assert await fetchval(dsn, "SELECT count(*) FROM timeline WHERE incident_id IS NULL") == 0

        audit = await fetch(dsn, "SELECT object_kind, object_id, reason, detail FROM purge_audit")
        kinds = sorted(r["object_kind"] for r in audit)
        assert kinds == ["incident", "recording", "recording", "recording", "timeline"]
        incident_rows = [r for r in audit if r["object_kind"] == "incident"]
        assert incident_rows[0]["object_id"] == str(old_inc)
        detail = json.loads(incident_rows[0]["detail"])
        assert detail["calls"] == 1
        assert detail["timeline_entries"] == 2
        assert all(r["reason"] == "retention policy" for r in audit)
        assert "0811000000" not in json.dumps([r["detail"] for r in audit])
        assert "Siti" not in json.dumps([r["detail"] for r in audit])

        again = await purge(dsn, recordings_days=7, incidents_days=365, now=now)
        assert (again.recordings_deleted, again.incidents_deleted) == (0, 0)
        assert await fetchval(dsn, "SELECT count(*) FROM purge_audit") == len(audit)

    async def test_undeletable_file_keeps_row_and_incident(
        self, fresh_migrated_dsn: str, tmp_path: Path
    ) -> None:
        """If a recording file cannot be deleted, its row and incident stay and the
        failure is reported, so nothing is left unreferenced on disk."""
        dsn = fresh_migrated_dsn
        now = time.time()
        async with Outbox(tmp_path / "o.db") as outbox:
            rec = IncidentRecorder(outbox)
            call_id = unique("c")
            incident = await rec.open_call(call_id, arrived_at=now - 400 * DAY)
            locked_dir = tmp_path / "locked"
            locked_dir.mkdir()
            wav = locked_dir / "r.wav"
            write_wav(wav, 0.1)
            # a directory where a file is expected: unlink() fails with an OSError
            bogus = tmp_path / "is_a_dir.wav"
            bogus.mkdir()
            info = await describe_recording(wav)
            await rec.recording(
                call_id,
                type(info)(str(bogus), info.size_bytes, info.sha256, info.duration_s),
                started_at=now - 400 * DAY,
            )
            await drain(outbox, dsn)
        report = await purge(dsn, recordings_days=7, incidents_days=365, now=now)
        assert report.recordings_deleted == 0
        assert report.incidents_deleted == 0
        assert len(report.errors) == 2
        assert bogus.exists()
        assert await fetchval(dsn, "SELECT count(*) FROM incidents WHERE id = $1", incident) == 1
