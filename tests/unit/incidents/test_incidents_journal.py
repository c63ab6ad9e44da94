"""The incident journal's writer: queue order is outbox order, and jobs share commits."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import pytest

from siaga_pbx import core
from siaga_pbx.adapters.incidents import IncidentJournal
from siaga_pbx.incidents import IncidentRecorder, Outbox
from siaga_pbx.incidents._ops import (
    AppendTimeline,
    CloseCall,
    OpenIncident,
    RegisterRecording,
    ResolveCallbackEntry,
)

INCIDENT = "6f1c1f9e-0b7a-4f43-9a43-3f3f0f1f2a10"


def wav(path: Path, seconds: float) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x01\x00" * int(8000 * seconds))


def event(call_id: str, stage: core.CallStage, at: float) -> core.PublishCallEvent:
    return core.PublishCallEvent(call_id, stage, at, {"queue": "main"})


async def journal_ops(tmp_path: Path, feed: list[tuple[str, object]]) -> tuple[list[object], int]:
    """Feed the journal, let it write, return the outbox's ops in seq order and the commits."""
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        journal = IncidentJournal(IncidentRecorder(outbox), tmp_path, clock=lambda: 100.0)
        for method, arg in feed:
            if method == "arrived":
                ev = core.CallerArrived(str(arg), core.CallerIdentity("0812"), "main")
                journal.call_arrived(ev, 1.0, INCIDENT)
            elif method == "recording":
                journal.recording_done(str(arg), f"siaga-call-{arg}", INCIDENT)
            else:
                assert isinstance(arg, core.PublishCallEvent)
                journal.published(arg, INCIDENT)
        writer = asyncio.create_task(journal.run())
        await asyncio.wait_for(journal.flush(), 10)
        writer.cancel()
        assert journal.failed == 0
        entries = await outbox.peek(10_000)
        seqs = [e.seq for e in entries]
        assert seqs == sorted(seqs)
        return [e.op for e in entries], outbox.append_commits


async def test_queue_order_is_outbox_order_across_a_recording(tmp_path: Path) -> None:
    """A recording described off the loop is not overtaken by what was queued after it."""
    wav(tmp_path / "siaga-call-c1.wav", 2.0)
    feed: list[tuple[str, object]] = [
        ("arrived", "c1"),
        ("published", event("c1", core.CallStage.ANSWERED, 2.0)),
        ("recording", "c1"),
        ("published", event("c1", core.CallStage.HUNG_UP, 3.0)),
    ]
    ops, _ = await journal_ops(tmp_path, feed)
    kinds = [type(op).__name__ for op in ops]
    assert kinds == [
        "OpenIncident",
        "AppendTimeline",
        "RegisterRecording",
        "AppendTimeline",
        "CloseCall",
    ]
    assert isinstance(ops[0], OpenIncident)
    assert isinstance(ops[2], RegisterRecording)
    assert ops[2].duration_s == pytest.approx(2.0)
    assert isinstance(ops[3], AppendTimeline)
    assert ops[3].stage == "hung_up"
    assert isinstance(ops[4], CloseCall)


async def test_a_burst_of_calls_shares_commits(tmp_path: Path) -> None:
    """200 calls' arrivals and timelines, queued at once, need far fewer commits than ops."""
    feed: list[tuple[str, object]] = []
    for n in range(200):
        feed += [
            ("arrived", f"c{n}"),
            ("published", event(f"c{n}", core.CallStage.QUEUED, 1.0)),
            ("published", event(f"c{n}", core.CallStage.HUNG_UP, 2.0)),
        ]
    ops, commits = await journal_ops(tmp_path, feed)
    assert len(ops) == 800  # open, queued, hung_up and its close, per call
    first = [op.call_id for op in ops if isinstance(op, OpenIncident)]
    assert first == [f"c{n}" for n in range(200)]
    assert commits <= 20, commits


async def test_a_missing_recording_is_journalled_as_failed_and_counted(tmp_path: Path) -> None:
    """No file where the call's recording should be: never silent."""
    missing: list[int] = []
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        journal = IncidentJournal(
            IncidentRecorder(outbox),
            tmp_path,
            clock=lambda: 100.0,
            on_recording_missing=lambda: missing.append(1),
        )
        journal.recording_done("c9", "siaga-call-c9", INCIDENT)
        writer = asyncio.create_task(journal.run())
        await asyncio.wait_for(journal.flush(), 10)
        writer.cancel()
        ops = [e.op for e in await outbox.peek(100)]
    assert len(ops) == 1
    op = ops[0]
    assert isinstance(op, AppendTimeline)
    assert (op.call_id, op.stage) == ("c9", "recording_failed")
    assert op.detail == {"name": "siaga-call-c9", "reason": "file missing"}
    assert missing == [1]


def overflowed(call_id: str, at: float, **detail: str) -> core.PublishCallEvent:
    return core.PublishCallEvent(call_id, core.CallStage.OVERFLOWED, at, dict(detail))


async def test_an_overflow_to_another_queue_does_not_close_the_call(tmp_path: Path) -> None:
    """A caller moved to the backup queue still waits: the timeline says so and
    the call's row stays open, until the caller really leaves."""
    moved = overflowed("c1", 5.0, from_queue="main", to_queue="backup", reason="wait")
    feed: list[tuple[str, object]] = [
        ("arrived", "c1"),
        ("published", moved),
        ("published", event("c1", core.CallStage.ABANDONED, 9.0)),
    ]
    ops, _ = await journal_ops(tmp_path, feed)
    assert [type(op).__name__ for op in ops] == [
        "OpenIncident",
        "AppendTimeline",
        "AppendTimeline",
        "CloseCall",
    ]
    closed = ops[3]
    assert isinstance(closed, CloseCall)
    assert closed.ended_at == 9.0


@pytest.mark.parametrize(
    "detail",
    [
        {"from_queue": "main", "dial": "PJSIP/backup-centre", "reason": "wait"},
        {"side": "fallback", "to": "dialplan-fallback", "reason": "service stopping"},
    ],
    ids=["dial-target", "dialplan-fallback"],
)
async def test_an_overflow_out_of_the_centre_closes_the_call(
    tmp_path: Path, detail: dict[str, str]
) -> None:
    """A redirect to a dial string or to the dialplan fallback ends the call here."""
    feed: list[tuple[str, object]] = [
        ("arrived", "c1"),
        ("published", overflowed("c1", 5.0, **detail)),
    ]
    ops, _ = await journal_ops(tmp_path, feed)
    assert [type(op).__name__ for op in ops] == ["OpenIncident", "AppendTimeline", "CloseCall"]
    closed = ops[2]
    assert isinstance(closed, CloseCall)
    assert closed.ended_at == 5.0


async def test_a_resolved_callback_is_journalled(tmp_path: Path) -> None:
    """The core's ResolveCallback becomes one outbox op with how, who, when and the note."""
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        journal = IncidentJournal(IncidentRecorder(outbox), tmp_path)
        resolved = core.ResolveCallback(
            "c1", core.CallbackResolution.UNREACHABLE, "taker:ab12", 50.0, "three tries"
        )
        journal.published(resolved, INCIDENT)
        writer = asyncio.create_task(journal.run())
        await asyncio.wait_for(journal.flush(), 10)
        writer.cancel()
        assert [e.op for e in await outbox.peek(10)] == [
            ResolveCallbackEntry("c1", "unreachable", "taker:ab12", 50.0, "three tries")
        ]


async def test_raw_header_bytes_and_an_empty_recording_reach_the_outbox(tmp_path: Path) -> None:
    """The caller's raw header bytes ride into OpenIncident; a header-only WAV is
    registered marked empty; the journal remembers what it registered (for the sweeper)."""
    wav(tmp_path / "siaga-call-c1.wav", 0.0)
    async with Outbox(tmp_path / "outbox.sqlite3") as outbox:
        journal = IncidentJournal(IncidentRecorder(outbox), tmp_path, clock=lambda: 100.0)
        who = core.CallerIdentity("0812", from_raw=b'"\xff\x01" <sip:0812@op>', pai_raw=b"<x>")
        journal.call_arrived(core.CallerArrived("c1", who, "main"), 1.0, INCIDENT)
        journal.recording_done("c1", "siaga-call-c1", INCIDENT)
        assert journal.journalled("siaga-call-c1.wav")
        assert not journal.journalled("siaga-call-c2.wav")
        writer = asyncio.create_task(journal.run())
        await asyncio.wait_for(journal.flush(), 10)
        writer.cancel()
        ops = [e.op for e in await outbox.peek(100)]
    opened, registered = ops
    assert isinstance(opened, OpenIncident)
    assert (opened.from_header_raw, opened.pai_header_raw) == (b'"\xff\x01" <sip:0812@op>', b"<x>")
    assert isinstance(registered, RegisterRecording)
    assert (registered.size_bytes, registered.duration_s, registered.empty) == (44, 0.0, True)
