"""The fallback sweeper: calls the dialplan carried while the service was away
become incidents exactly once, from nothing but their recordings' names."""

from __future__ import annotations

import os
import wave
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from siaga_pbx import ids
from siaga_pbx.adapters.fallback import FallbackSweeper, parse_name
from siaga_pbx.incidents import (
    AppendTimeline,
    CloseCall,
    IncidentRecorder,
    OpenIncident,
    Outbox,
    RegisterRecording,
)
from siaga_pbx.service import incident_id_for

NOW = 1_795_000_000.0
CALL = "siaga-test-1794999900.42"


def wav(path: Path, seconds: float = 1.0, mtime: float = NOW - 60) -> Path:
    """A mono 8 kHz WAV of ``seconds`` (0: the 44-byte header alone)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * int(8000 * seconds))
    os.utime(path, (mtime, mtime))
    return path


async def sweep(
    tmp_path: Path,
    *,
    alive: bool = False,
    since: float = NOW - 3600,
    calls_since: float | None = None,
    journalled: frozenset[str] = frozenset(),
    now: float = NOW,
) -> list[object]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    if not (state / "fallback-sweep.json").exists():
        marks = f', "calls_since": {calls_since}' if calls_since is not None else ""
        (state / "fallback-sweep.json").write_text(f'{{"since": {since}{marks}, "done": []}}')

    async def channel_alive(_call_id: str) -> bool:
        return alive

    async with Outbox(state / "outbox.sqlite3") as outbox:
        sweeper = FallbackSweeper(
            IncidentRecorder(outbox),
            tmp_path / "rec",
            state,
            channel_alive=channel_alive,
            incident_for=incident_id_for,
            journalled=journalled.__contains__,
            clock=lambda: now,
        )
        await sweeper.sweep()
        return [e.op for e in await outbox.peek(1000)]


class TestNames:
    @settings(max_examples=500)
    @given(st.text(max_size=200))
    def test_any_name_parses_safely_or_not_at_all(self, name: str) -> None:
        """No file name, however hostile, yields an unsafe call id or a non-dialable number."""
        try:
            parsed = parse_name(Path("/rec") / name, mtime=NOW)
        except ValueError:  # a name Path itself refuses (NUL)
            return
        if parsed is not None:
            assert ids.is_safe_id(parsed.call_id)
            assert set(parsed.number) <= set("0123456789+")
            assert parsed.arrived_at <= parsed.ended_at

    def test_uniqueid_gives_arrival_and_name_gives_number(self) -> None:
        """The uniqueid's epoch is the arrival; digits after '_' are the caller's number."""
        parsed = parse_name(Path(f"siaga-fallback-{CALL}_+6281234.wav"), mtime=NOW)
        assert parsed is not None
        assert (parsed.kind, parsed.call_id, parsed.number) == ("fallback", CALL, "+6281234")
        assert parsed.arrived_at == 1794999900.0
        assert parse_name(Path("siaga-fallback-../../x_1.wav"), mtime=NOW) is None
        assert parse_name(Path(f"siaga-callback-{CALL}_1.wav"), mtime=NOW) is None


class TestSweep:
    async def test_fallback_call_becomes_one_incident(self, tmp_path: Path) -> None:
        """A finished fallback recording opens one incident with its timeline and recording."""
        (tmp_path / "rec").mkdir()
        wav(tmp_path / "rec" / f"siaga-fallback-{CALL}_0811.wav")
        ops = await sweep(tmp_path)
        kinds = [type(op).__name__ for op in ops]
        assert kinds == [
            "OpenIncident",
            "AppendTimeline",
            "RegisterRecording",
            "AppendTimeline",
            "CloseCall",
        ]
        opened = ops[0]
        assert isinstance(opened, OpenIncident)
        assert (opened.call_id, opened.caller_number, opened.queue) == (CALL, "0811", "fallback")
        assert str(opened.incident_id) == incident_id_for(CALL)
        assert isinstance(ops[1], AppendTimeline) and ops[1].stage == "arrived"
        assert isinstance(ops[4], CloseCall) and ops[4].hangup_side == "fallback"
        assert await sweep(tmp_path) == ops  # a second sweep (or restart) adds nothing

    async def test_handed_back_call_only_gets_its_recording(self, tmp_path: Path) -> None:
        """A handed-back caller already has an incident: only the recording is registered."""
        (tmp_path / "rec").mkdir()
        wav(tmp_path / "rec" / f"siaga-handback-{CALL}_0811.wav")
        ops = await sweep(tmp_path)
        assert len(ops) == 1 and isinstance(ops[0], RegisterRecording)
        assert ops[0].call_id == CALL

    async def test_unfinished_old_and_foreign_files_are_left(self, tmp_path: Path) -> None:
        """Files still written, of a live channel, from before our time, not ours: no incident."""
        rec = tmp_path / "rec"
        rec.mkdir()
        wav(rec / f"siaga-fallback-{CALL}_1.wav", mtime=NOW - 1)  # still being written
        wav(rec / "siaga-fallback-siaga-test-1.2_2.wav", mtime=NOW - 7200)  # before our time
        wav(rec / f"siaga-call-{CALL}.wav")  # the call recording: with its fallback file
        wav(rec / f"siaga-callback-{CALL}_3.wav")
        assert await sweep(tmp_path) == []
        os.utime(rec / f"siaga-fallback-{CALL}_1.wav", (NOW - 60, NOW - 60))
        assert await sweep(tmp_path, alive=True) == []  # Asterisk still holds the channel
        ops = await sweep(tmp_path)
        # The fallback call's five ops, with the call recording (the moment
        # before Stasis() failed) registered right after the fallback's own.
        assert [type(op).__name__ for op in ops] == [
            "OpenIncident",
            "AppendTimeline",
            "RegisterRecording",
            "RegisterRecording",
            "AppendTimeline",
            "CloseCall",
        ]
        paths = [op.path for op in ops if isinstance(op, RegisterRecording)]
        assert paths == [
            str(rec / f"siaga-fallback-{CALL}_1.wav"),
            str(rec / f"siaga-call-{CALL}.wav"),
        ]

    async def test_handed_back_call_gets_its_call_recording_too(self, tmp_path: Path) -> None:
        """After a hand-back both parts are registered: the service's and the dialplan's
        (the service may have stopped before it journalled its part)."""
        rec = tmp_path / "rec"
        rec.mkdir()
        wav(rec / f"siaga-handback-{CALL}_0811.wav")
        wav(rec / f"siaga-call-{CALL}.wav")
        ops = await sweep(tmp_path)
        assert [op.path for op in ops if isinstance(op, RegisterRecording)] == [
            str(rec / f"siaga-handback-{CALL}_0811.wav"),
            str(rec / f"siaga-call-{CALL}.wav"),
        ]
        assert len(ops) == 2

    async def test_damaged_state_file_does_not_stop_the_service(self, tmp_path: Path) -> None:
        """An unreadable state file is replaced; nothing from before 'now' is imported."""
        (tmp_path / "rec").mkdir()
        (tmp_path / "state").mkdir()
        (tmp_path / "state" / "fallback-sweep.json").write_text("{not json")
        wav(tmp_path / "rec" / f"siaga-fallback-{CALL}_0811.wav")
        assert await sweep(tmp_path) == []


class TestEveryFileOnce:
    """Every file the dialplan writes for a call is registered once (or marked empty)."""

    async def test_the_empty_call_recording_of_a_fallback_call_is_marked_empty(
        self, tmp_path: Path
    ) -> None:
        """The 44-byte siaga-call-* of a call whose Stasis() failed is registered empty;
        the fallback's own recording, with audio, is not."""
        rec = tmp_path / "rec"
        rec.mkdir()
        wav(rec / f"siaga-fallback-{CALL}_0811.wav", seconds=6.4)
        empty = wav(rec / f"siaga-call-{CALL}.wav", seconds=0.0)
        assert empty.stat().st_size == 44
        ops = await sweep(tmp_path)
        regs = {op.path: op for op in ops if isinstance(op, RegisterRecording)}
        assert len(regs) == 2
        assert regs[str(empty)].empty and regs[str(empty)].duration_s == 0.0
        assert not regs[str(rec / f"siaga-fallback-{CALL}_0811.wav")].empty

    async def test_a_call_recording_whose_end_the_service_missed_is_registered(
        self, tmp_path: Path
    ) -> None:
        """A siaga-call-* file finished while the service was away (no StasisEnd) is
        registered by the sweeper, once, even across a restart."""
        rec = tmp_path / "rec"
        rec.mkdir()
        path = wav(rec / f"siaga-call-{CALL}.wav", seconds=2.0, mtime=NOW - 30)
        ops = await sweep(tmp_path, calls_since=NOW - 120)
        assert len(ops) == 1 and isinstance(ops[0], RegisterRecording)
        assert (ops[0].call_id, ops[0].path, ops[0].empty) == (CALL, str(path), False)
        assert ops[0].ended_at == NOW - 30 and ops[0].started_at == NOW - 32
        assert await sweep(tmp_path, now=NOW + 60) == ops  # a later sweep adds nothing

    async def test_the_services_own_and_unsettled_call_recordings_are_left(
        self, tmp_path: Path
    ) -> None:
        """A call recording the service journalled, or one inside its grace period, is
        left to the service; a live channel's waits, and is taken once it is gone."""
        rec = tmp_path / "rec"
        rec.mkdir()
        mine = wav(rec / "siaga-call-siaga-test-1.1.wav", mtime=NOW - 30)
        wav(rec / "siaga-call-siaga-test-1.2.wav", mtime=NOW - 5)  # the service's grace
        live = wav(rec / "siaga-call-siaga-test-1.3.wav", mtime=NOW - 600)
        got = await sweep(
            tmp_path, calls_since=NOW - 900, journalled=frozenset({mine.name}), alive=True
        )
        assert got == []
        # Later: the live channel has gone; the watermark held back for it.
        ops = await sweep(tmp_path, journalled=frozenset({mine.name}), now=NOW + 600)
        paths = [op.path for op in ops if isinstance(op, RegisterRecording)]
        assert paths == [str(live), str(rec / "siaga-call-siaga-test-1.2.wav")]

    async def test_a_restart_looks_only_past_the_watermark(self, tmp_path: Path) -> None:
        """Call recordings older than the last sweep's watermark are not described again."""
        rec = tmp_path / "rec"
        rec.mkdir()
        wav(rec / "siaga-call-siaga-test-1.1.wav", mtime=NOW - 3000)
        assert await sweep(tmp_path, calls_since=NOW - 60) == []
