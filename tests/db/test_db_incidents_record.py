"""The incident record's rules in PostgreSQL: repeat callers, derived times,
verbatim caller strings, the append-only timeline."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from siaga_pbx.core import CallbackEntry, CallStage, PublishCallEvent
from siaga_pbx.incidents import IncidentRecorder, IncidentStore, Outbox
from siaga_pbx.incidents._recordings import RecordingInfo
from siaga_pbx.incidents._text import raw_bytes

from ._support import drain, fetch, fetchval, unique

pytestmark = pytest.mark.timeout(60)

WINDOW_S = 600.0


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(tmp_path / "o.db") as ob:
        yield ob


@pytest.fixture
async def store(migrated_dsn: str) -> AsyncIterator[IncidentStore]:
    s = await IncidentStore.connect(migrated_dsn)
    try:
        yield s
    finally:
        await s.close()


async def links_of(dsn: str, incident_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    rows = await fetch(
        dsn,
        "SELECT linked_incident_id, kind FROM incident_links WHERE incident_id = $1",
        incident_id,
    )
    return [(r["linked_incident_id"], r["kind"]) for r in rows]


class TestRepeatCallers:
    async def test_same_number_within_window_is_linked(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """A second call from a number within the window links to the first incident."""
        rec = IncidentRecorder(outbox)
        number = unique("0812")
        t0 = time.time() - 1000
        first = await rec.open_call(unique("c"), arrived_at=t0, number=number)
        second = await rec.open_call(unique("c"), arrived_at=t0 + WINDOW_S - 1, number=number)
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        assert await links_of(migrated_dsn, second) == [(first, "repeat_caller")]
        assert await links_of(migrated_dsn, first) == []

    async def test_same_number_outside_window_is_not_linked(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """A call after the window has passed opens an unlinked incident."""
        rec = IncidentRecorder(outbox)
        number = unique("0812")
        t0 = time.time() - 5000
        await rec.open_call(unique("c"), arrived_at=t0, number=number)
        later = await rec.open_call(unique("c"), arrived_at=t0 + WINDOW_S + 1, number=number)
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        assert await links_of(migrated_dsn, later) == []

    async def test_pai_wins_over_from_number(self, migrated_dsn: str, outbox: Outbox) -> None:
        """Calls match on PAI when present: same PAI links even with different From
        numbers, and a shared From number with a different PAI does not link."""
        rec = IncidentRecorder(outbox)
        pai, from_number = unique("+62811"), unique("0813")
        t0 = time.time() - 100
        first = await rec.open_call(unique("c"), arrived_at=t0, number=from_number, pai=pai)
        same_pai = await rec.open_call(unique("c"), arrived_at=t0 + 1, number="999", pai=pai)
        other_pai = await rec.open_call(
            unique("c"), arrived_at=t0 + 2, number=from_number, pai=unique("+62822")
        )
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        assert await links_of(migrated_dsn, same_pai) == [(first, "repeat_caller")]
        assert await links_of(migrated_dsn, other_pai) == []

    async def test_empty_number_never_matches(self, migrated_dsn: str, outbox: Outbox) -> None:
        """Two anonymous calls (no number, no PAI) are not linked to each other."""
        rec = IncidentRecorder(outbox)
        t0 = time.time() - 50
        await rec.open_call(unique("c"), arrived_at=t0)
        anonymous = await rec.open_call(unique("c"), arrived_at=t0 + 1)
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        assert await links_of(migrated_dsn, anonymous) == []

    async def test_recent_history_lists_calls_from_the_number(
        self, migrated_dsn: str, outbox: Outbox, store: IncidentStore
    ) -> None:
        """recent_history returns the number's calls since a time, newest first."""
        rec = IncidentRecorder(outbox)
        number = unique("0814")
        t0 = time.time() - 3000
        old = await rec.open_call(unique("c"), arrived_at=t0, number=number)
        mid = await rec.open_call(unique("c"), arrived_at=t0 + 1000, number=number)
        new = await rec.open_call(unique("c"), arrived_at=t0 + 2000, number=number)
        await rec.open_call(unique("c"), arrived_at=t0 + 2001, number=unique("0815"))
        await drain(outbox, migrated_dsn)
        history = await store.recent_history(number, since=t0 + 500)
        assert [h.incident_id for h in history] == [new, mid]
        assert old not in [h.incident_id for h in await store.recent_history(number, t0 + 1)]
        assert await store.recent_history("", since=0) == []


class TestDerivedTimes:
    async def test_wait_and_talk_come_from_the_timeline(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """wait = answered - arrived and talk = hung_up - answered, from timeline entries."""
        rec = IncidentRecorder(outbox)
        call_id = unique("c")
        t0 = time.time() - 500
        await rec.open_call(call_id, arrived_at=t0)
        for stage, at in (("arrived", t0), ("queued", t0 + 2), ("answered", t0 + 12.5)):
            await rec.publish(PublishCallEvent(call_id, CallStage(stage), at, {"taker_id": "t7"}))
        await rec.timeline(call_id, CallStage.HUNG_UP, t0 + 72.5)
        await drain(outbox, migrated_dsn)
        row = (await fetch(migrated_dsn, "SELECT * FROM call_times WHERE call_id = $1", call_id))[0]
        assert row["wait_s"] == pytest.approx(12.5)
        assert row["talk_s"] == pytest.approx(60.0)
        assert row["taker_id"] == "t7"

    async def test_abandoned_call_has_wait_but_no_talk(
        self, migrated_dsn: str, outbox: Outbox, store: IncidentStore
    ) -> None:
        """An abandoned call's wait runs to the abandon; it has no talk time, is
        classified 'abandoned', and its callback entry derives wait_s too."""
        rec = IncidentRecorder(outbox)
        call_id = unique("c")
        number = unique("0816")
        t0 = time.time() - 400
        incident_id = await rec.open_call(call_id, arrived_at=t0, number=number)
        await rec.timeline(call_id, "arrived", t0)
        await rec.timeline(call_id, "abandoned", t0 + 31)
        await rec.callback(CallbackEntry(call_id, number, t0, t0 + 31, "main", "waiting"))
        await drain(outbox, migrated_dsn)
        row = (await fetch(migrated_dsn, "SELECT * FROM call_times WHERE call_id = $1", call_id))[0]
        assert row["wait_s"] == pytest.approx(31.0)
        assert row["talk_s"] is None
        disposition = await fetchval(
            migrated_dsn, "SELECT disposition FROM incidents WHERE id = $1", incident_id
        )
        assert disposition == "abandoned"
        pending = [c for c in await store.pending_callbacks() if c["call_id"] == call_id]
        assert len(pending) == 1
        assert pending[0]["wait_s"] == pytest.approx(31.0)
        assert pending[0]["where"] == "waiting"


HOSTILE_NAMES = [
    "Robert'); DROP TABLE incidents;--",
    "\"quoted\" 'single' `back` \\ backslash $1 %s {}",
    "x" * 2048,
    "ctrl:\x01\x02\x07\x08\t\n\r\x1b[31m\x7f end",
    "Ibu Siti 😀 \u202eRTL override",
]


class TestVerbatimCallerStrings:
    @pytest.mark.parametrize("name", HOSTILE_NAMES, ids=["sql", "quotes", "2kb", "ctrl", "unicode"])
    async def test_hostile_names_are_stored_verbatim(
        self, migrated_dsn: str, outbox: Outbox, name: str
    ) -> None:
        """SQL-looking, quote-laden, 2 KB and control-character names come back exactly."""
        call_id = unique("c")
        await IncidentRecorder(outbox).open_call(
            call_id, arrived_at=time.time(), number=name[:40], name=name, pai=name
        )
        await drain(outbox, migrated_dsn)
        row = (
            await fetch(
                migrated_dsn,
                "SELECT caller_number, caller_name, pai, caller_name_raw FROM calls"
                " WHERE call_id = $1",
                call_id,
            )
        )[0]
        assert (row["caller_number"], row["caller_name"], row["pai"]) == (name[:40], name, name)
        assert row["caller_name_raw"] is None
        assert await fetchval(migrated_dsn, "SELECT count(*) FROM incidents") > 0

    async def test_nul_and_lone_surrogates_keep_the_original_bytes(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """Characters PostgreSQL text cannot hold become U+FFFD in the text column and
        the original bytes are kept exactly in the *_raw column."""
        bad_utf8 = b"Bad \xff\xfe name".decode("utf-8", "surrogateescape")
        name = bad_utf8 + "\x00tail"
        call_id = unique("c")
        await IncidentRecorder(outbox).open_call(
            call_id, arrived_at=time.time(), number="0817\x00", name=name
        )
        await drain(outbox, migrated_dsn)
        row = (await fetch(migrated_dsn, "SELECT * FROM calls WHERE call_id = $1", call_id))[0]
        assert row["caller_name"] == "Bad \ufffd\ufffd name\ufffdtail"
        assert row["caller_name_raw"] == b"Bad \xff\xfe name\x00tail"
        assert row["caller_name_raw"] == raw_bytes(name)
        assert row["caller_number"] == "0817\ufffd"
        assert row["caller_number_raw"] == b"0817\x00"
        assert row["pai_raw"] is None

    async def test_timeline_detail_with_unstorable_text_is_kept(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """A timeline detail string with NUL or a lone surrogate is stored (as U+FFFD),
        not rejected by jsonb."""
        call_id = unique("c")
        rec = IncidentRecorder(outbox)
        await rec.open_call(call_id, arrived_at=time.time())
        await rec.timeline(call_id, "hung_up", time.time(), {"reason": "a\x00b\udcff"})
        await drain(outbox, migrated_dsn)
        assert outbox.pending == 0
        assert await outbox.dead_letters() == []
        detail = await fetchval(
            migrated_dsn, "SELECT detail->>'reason' FROM timeline WHERE call_id = $1", call_id
        )
        assert detail == "a\ufffdb\ufffd"


class TestAppendOnlyTimeline:
    async def test_update_delete_truncate_are_refused(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """UPDATE, DELETE and TRUNCATE on the timeline raise; the entry is unchanged."""
        call_id = unique("c")
        rec = IncidentRecorder(outbox)
        await rec.open_call(call_id, arrived_at=time.time())
        await rec.timeline(call_id, "arrived", time.time())
        await drain(outbox, migrated_dsn)
        conn = await asyncpg.connect(migrated_dsn)
        try:
            for sql in (
                "UPDATE timeline SET stage = 'forged' WHERE call_id = $1",
                "DELETE FROM timeline WHERE call_id = $1",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                    await conn.execute(sql, call_id)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute("TRUNCATE timeline CASCADE")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(
                    "DELETE FROM incidents WHERE id = (SELECT incident_id FROM calls"
                    " WHERE call_id = $1)",
                    call_id,
                )
            stages = await conn.fetch("SELECT stage FROM timeline WHERE call_id = $1", call_id)
        finally:
            await conn.close()
        assert [r["stage"] for r in stages] == ["arrived"]

    async def test_purge_audit_is_immutable(self, migrated_dsn: str) -> None:
        """Rows of purge_audit cannot be updated or deleted."""
        conn = await asyncpg.connect(migrated_dsn)
        try:
            await conn.execute(
                "INSERT INTO purge_audit (object_kind, object_id, reason) VALUES"
                " ('incident', 'x', 'test')"
            )
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("UPDATE purge_audit SET reason = 'forged'")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM purge_audit")
        finally:
            await conn.close()


class TestRecoveredCalls:
    """A restarted service journals every call it adopts as *recovered*: the
    incident is opened at most once, whether or not the run before journalled it."""

    async def stages(self, dsn: str, call_id: str) -> list[tuple[str, bool]]:
        rows = await fetch(
            dsn, "SELECT stage, detail FROM timeline WHERE call_id = $1 ORDER BY id", call_id
        )
        return [(r["stage"], "recovered" in str(r["detail"])) for r in rows]

    async def test_journalled_before_the_restart_is_left_alone(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        rec = IncidentRecorder(outbox)
        call_id, incident = unique("c"), uuid.uuid4()
        t0 = time.time() - 60
        await rec.open_call(call_id, arrived_at=t0, number="0812", incident_id=incident)
        await rec.timeline(call_id, CallStage.ARRIVED, t0, {"queue": "main"})
        await rec.open_call(
            call_id, arrived_at=t0, number="0812", incident_id=incident, recovered=True
        )
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        count = await fetchval(
            migrated_dsn, "SELECT count(*) FROM calls WHERE call_id = $1", call_id
        )
        assert count == 1
        assert await self.stages(migrated_dsn, call_id) == [("arrived", False)]
        assert await outbox.dead_letters() == []

    async def test_lost_before_the_restart_is_opened_with_its_arrival(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        rec = IncidentRecorder(outbox)
        call_id, incident = unique("c"), uuid.uuid4()
        t0 = time.time() - 60
        for _ in range(2):  # adopted by two restarts in a row: still once
            await rec.open_call(
                call_id, arrived_at=t0, number="0812", incident_id=incident, recovered=True
            )
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        row = await fetch(
            migrated_dsn, "SELECT incident_id, arrived_at FROM calls WHERE call_id = $1", call_id
        )
        assert [(r["incident_id"], r["arrived_at"].timestamp()) for r in row] == [
            (incident, pytest.approx(t0, abs=1e-3))
        ]
        assert await self.stages(migrated_dsn, call_id) == [("arrived", True)]

    async def test_a_new_arrival_opened_twice_is_still_refused(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        """Only the recovery path forgives a second open; a new one is a bug, parked."""
        rec = IncidentRecorder(outbox)
        call_id = unique("c")
        await rec.open_call(call_id, arrived_at=time.time(), number="0812")
        await rec.open_call(call_id, arrived_at=time.time(), number="0812")
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        assert len(await outbox.dead_letters()) == 1


class TestRecordingRegisteredTwice:
    """The service and the fallback sweeper may both register a call's recording."""

    async def test_the_larger_description_wins_and_a_repeat_changes_nothing(
        self, migrated_dsn: str, outbox: Outbox
    ) -> None:
        rec = IncidentRecorder(outbox)
        call_id = unique("c")
        t0 = time.time() - 60
        await rec.open_call(call_id, arrived_at=t0, number="0812")
        path = f"/rec/siaga-call-{call_id}.wav"
        small = RecordingInfo(path, 1_000, "a" * 64, 0.06)
        large = RecordingInfo(path, 64_044, "b" * 64, 4.0)
        await rec.recording(call_id, small, started_at=t0, ended_at=t0 + 0.06)
        await rec.recording(call_id, large, started_at=t0, ended_at=t0 + 4.0)
        await rec.recording(call_id, small, started_at=t0, ended_at=t0 + 0.06)  # stale: ignored
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        rows = await fetch(
            migrated_dsn,
            "SELECT size_bytes, sha256, duration_s FROM recordings WHERE call_id = $1",
            call_id,
        )
        assert [(r["size_bytes"], r["sha256"], r["duration_s"]) for r in rows] == [
            (64_044, "b" * 64, 4.0)
        ]
        assert await outbox.dead_letters() == []


class TestRawHeaders:
    async def test_exact_header_bytes_are_kept_and_returned_as_base64(
        self, migrated_dsn: str, outbox: Outbox, store: IncidentStore
    ) -> None:
        """The From header's exact bytes (bad UTF-8, control chars) are stored beside the
        cleaned name and the incident API's data returns them base64; no PAI gives null."""
        from_raw = b'"Bad \xff\xfe\xc3 \x01\x1b[2J" <sip:0811100004@op>;tag=1'
        call_id = unique("c")
        incident = await IncidentRecorder(outbox).open_call(
            call_id,
            arrived_at=time.time(),
            number="0811100004",
            name="Bad \ufffd\ufffd\ufffd \ufffd\ufffd[2J",
            from_header_raw=from_raw,
        )
        await drain(outbox, migrated_dsn)
        row = (await fetch(migrated_dsn, "SELECT * FROM calls WHERE call_id = $1", call_id))[0]
        assert row["from_header_raw"] == from_raw
        assert row["pai_header_raw"] is None
        got = await store.get_incident(incident)
        assert got is not None
        (call,) = got["calls"]
        assert base64.b64decode(call["from_header_b64"]) == from_raw
        assert call["pai_header_b64"] is None
        assert call["caller_name"] == "Bad \ufffd\ufffd\ufffd \ufffd\ufffd[2J"


class TestEmptyRecording:
    async def test_a_header_only_file_is_registered_and_marked_empty(
        self, migrated_dsn: str, outbox: Outbox, store: IncidentStore
    ) -> None:
        """A 44-byte WAV with no frames is registered once, marked empty; real audio is not."""
        rec = IncidentRecorder(outbox)
        call_id = unique("c")
        t0 = time.time() - 60
        incident = await rec.open_call(call_id, arrived_at=t0, number="0812")
        empty = RecordingInfo(f"/rec/siaga-call-{call_id}.wav", 44, "c" * 64, 0.0)
        audio = RecordingInfo(f"/rec/siaga-fallback-{call_id}_0812.wav", 102_444, "d" * 64, 6.4)
        await rec.recording(call_id, empty, started_at=t0, ended_at=t0)
        await rec.recording(call_id, audio, started_at=t0, ended_at=t0 + 6.4)
        await drain(outbox, migrated_dsn, repeat_window_s=WINDOW_S)
        got = await store.get_incident(incident)
        assert got is not None
        marks = {r["size_bytes"]: r["empty"] for r in got["recordings"]}
        assert marks == {44: True, 102_444: False}
