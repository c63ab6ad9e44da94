"""Journals the 112 calls the dialplan fallback carried while we were away.

While the service is down (or its event websocket is), ``Stasis()`` fails and
``[siaga-fallback]`` rings the call takers directly. ARI cannot tell us about
those calls afterwards: a finished channel leaves no trace in ARI. What stays
is the fallback's evidence recording, and the dialplan names it so that it
carries what the incident needs (``[siaga-record]``)::

    siaga-fallback-<uniqueid>_<caller digits>.wav   a call we never saw
    siaga-handback-<uniqueid>_<caller digits>.wav   a call we handed back (graceful
                                                    stop, overflow): it has an incident
    siaga-callback-...                              a callback leg: not ours to journal

``FallbackSweeper`` scans the recording directory (at every resync and every
``interval_s``) for finished files (unchanged for ``settle_s`` and whose
channel Asterisk no longer holds) and journals each exactly once:

- ``siaga-fallback-*``: an incident with one call (arrival from the uniqueid's
  epoch, the caller's number from the file name, end = the file's last write),
  timeline ``arrived`` and ``hung_up`` with ``mode=fallback``, and the recording;
- ``siaga-handback-*``: the recording, attached to the call's existing incident.

Both also register the call's own recording ``siaga-call-<uniqueid>`` (from
[siaga-emergency], before Stasis()): after a hand-back it holds the call up
to the hand-back; for a call we never saw it holds no audio, only a WAV
header, and is registered marked ``empty`` (never silently dropped, never
passed off as audio).

A ``siaga-call-*`` file is otherwise the service's to journal, when its caller
leaves Stasis (or, after an event websocket gap, when the resync finds the
caller gone). The sweeper is the safety net for the ones the service never
saw end: above all a caller who hung up while the service itself was down (a
SIGKILL: the next run does not know the call). Such a file, unchanged for ``call_settle_s`` (longer
than the service's grace period, so the service goes first), whose channel
is gone and which the service's journal has not registered, is registered
here. These files are scanned only from a watermark (``calls_since``) that
each sweep moves up, held back by any file whose channel is still up, so a
restart looks again only at what finished since the last sweep.

Every file the dialplan writes for a call is thus registered once:
``siaga-call-*``, ``siaga-fallback-*`` and ``siaga-handback-*``; a second
registration of the same path (service and sweeper both, around a restart)
changes nothing in PostgreSQL. ``siaga-callback-*`` (a callback leg) has no
call of ours to belong to yet and is left alone.

Which files are done lives in ``<state_dir>/fallback-sweep.json``. Files older
than the first start of the service with this state dir are never imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .. import callerid, ids
from ..incidents import DetailValue, IncidentRecorder, describe_recording

log = structlog.get_logger(__name__)

_NAME = re.compile(
    r"^siaga-(?P<kind>fallback|handback)-(?P<call_id>[A-Za-z0-9.-]{1,96})_(?P<number>[0-9+]{0,32})\.wav$"
)
_CALL_NAME = re.compile(r"^siaga-call-(?P<call_id>[A-Za-z0-9.-]{1,96})\.wav$")
_EPOCH = re.compile(r"(?P<epoch>\d{9,11})\.\d+$")
_WATERMARK_SLACK_S = 1.0  # file times are not exact: look back a little further
_KEEP_DONE = 50_000  # names remembered (the oldest are forgotten first)


@dataclass(frozen=True, slots=True)
class FallbackFile:
    """What a fallback recording's name and file tell about its call."""

    path: Path
    kind: str  # "fallback" | "handback"
    call_id: str
    number: str
    arrived_at: float
    ended_at: float


def parse_name(path: Path, *, mtime: float) -> FallbackFile | None:
    """The call behind a recording file name, or None when it is not one of ours."""
    m = _NAME.match(path.name)
    if m is None or not ids.is_safe_id(m["call_id"]):
        return None
    epoch = _EPOCH.search(m["call_id"])
    arrived = float(epoch["epoch"]) if epoch else mtime
    return FallbackFile(
        path=path,
        kind=m["kind"],
        call_id=m["call_id"],
        number=callerid.clean_number(m["number"]),
        arrived_at=min(arrived, mtime),
        ended_at=mtime,
    )


@dataclass(frozen=True, slots=True)
class CallRecording:
    """A call's own recording (``siaga-call-<call_id>.wav``) found on disk."""

    path: Path
    call_id: str
    mtime: float


ChannelAlive = Callable[[str], Awaitable[bool | None]]


class FallbackSweeper:
    """Run ``run()``; call ``poke()`` to scan now (after a resync)."""

    def __init__(
        self,
        recorder: IncidentRecorder,
        recording_dir: Path,
        state_dir: Path,
        *,
        channel_alive: ChannelAlive,
        incident_for: Callable[[str], str],
        journalled: Callable[[str], bool] = lambda _name: False,
        language: str = "id",
        interval_s: float = 5.0,
        settle_s: float = 3.0,
        call_settle_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._dir = recording_dir
        self._state_path = state_dir / "fallback-sweep.json"
        self._channel_alive = channel_alive
        self._incident_for = incident_for
        self._language = language
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._call_settle_s = call_settle_s
        self._journalled_by_service = journalled
        self._clock = clock
        self._wake = asyncio.Event()
        self._since, self._calls_since, self._done = self._load()
        self.journalled = 0

    def _load(self) -> tuple[float, float, dict[str, None]]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
            since = float(data["since"])
            # A state file from before the call-recording watermark: start it
            # now, rather than registering every recording since ``since`` again.
            calls_since = float(data.get("calls_since", self._clock()))
            done = {str(n): None for n in data.get("done", [])}
        except FileNotFoundError:
            since, done = self._clock(), {}
            calls_since = since
            self._save(since, calls_since, done)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A damaged state file must not stop the service; start afresh from now.
            log.error("fallback.state_unreadable", path=str(self._state_path), error=str(exc))  # noqa: TRY400
            since, done = self._clock(), {}
            calls_since = since
            self._save(since, calls_since, done)
        return since, calls_since, done

    def _save(self, since: float, calls_since: float, done: dict[str, None]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        state = {"since": since, "calls_since": calls_since, "done": list(done)}
        tmp.write_text(json.dumps(state), encoding="utf-8")
        os.replace(tmp, self._state_path)

    def poke(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:  # the sweeper must outlive any one bad file or disk error
                log.exception("fallback.sweep_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)
            self._wake.clear()

    def _candidates(self, now: float) -> tuple[list[FallbackFile], list[CallRecording]]:
        found: list[FallbackFile] = []
        calls: list[CallRecording] = []
        with_fallback: set[str] = set()  # calls whose siaga-call-* a fallback file covers
        try:
            entries = list(os.scandir(self._dir))
        except FileNotFoundError:
            return [], []
        for entry in entries:
            if entry.name.startswith("siaga-call-"):
                if (rec := self._call_recording(entry, now)) is not None:
                    calls.append(rec)
                continue
            if not entry.name.startswith(("siaga-fallback-", "siaga-handback-")):
                continue
            if (m := _NAME.match(entry.name)) is not None:
                with_fallback.add(m["call_id"])
            if entry.name in self._done:
                continue
            try:
                mtime = entry.stat().st_mtime
            except FileNotFoundError:
                continue
            if mtime < self._since or now - mtime < self._settle_s:
                continue  # from before our time, or still being written
            parsed = parse_name(Path(entry.path), mtime=mtime)
            if parsed is None:
                log.warning("fallback.unknown_file", name=callerid.clean_text(entry.name, 200))
                self._done[entry.name] = None
                continue
            found.append(parsed)
        calls = [c for c in calls if c.call_id not in with_fallback]
        return (
            sorted(found, key=lambda f: (f.arrived_at, f.call_id)),
            sorted(calls, key=lambda c: (c.mtime, c.call_id)),
        )

    def _call_recording(self, entry: os.DirEntry[str], now: float) -> CallRecording | None:
        """A ``siaga-call-*`` file the service may have missed, or None."""
        m = _CALL_NAME.match(entry.name)
        if m is None or not ids.is_safe_id(m["call_id"]) or entry.name in self._done:
            return None
        try:
            mtime = entry.stat().st_mtime
        except FileNotFoundError:
            return None
        if mtime < self._calls_since:
            return None  # looked at by an earlier sweep
        return CallRecording(Path(entry.path), m["call_id"], mtime)

    async def sweep(self) -> int:
        """Journal every finished fallback recording not yet journalled, and
        every call recording the service missed; return how many."""
        started = self._clock()
        files, calls = await asyncio.to_thread(self._candidates, started)
        count = 0
        for f in files:
            if await self._channel_alive(f.call_id):
                continue  # the call is still going on: its recording is not finished
            await self._journal(f)
            await self._mark_done(f.path.name)
            count += 1
        # The watermark may pass every file this sweep has settled, except one
        # whose channel is still up (its recording may have stopped while the
        # call goes on) or that is still being written.
        watermark = started - self._call_settle_s - _WATERMARK_SLACK_S
        for c in calls:
            if started - c.mtime < self._call_settle_s:
                continue  # still being written, or the service's grace period
            if self._journalled_by_service(c.path.name):
                continue
            if await self._channel_alive(c.call_id):
                watermark = min(watermark, c.mtime)
                continue
            await self._journal_missed_call_recording(c)
            await self._mark_done(c.path.name)
            count += 1
        if watermark > self._calls_since:
            self._calls_since = watermark
            await asyncio.to_thread(self._save, self._since, self._calls_since, dict(self._done))
        self.journalled += count
        return count

    async def _mark_done(self, name: str) -> None:
        self._done[name] = None
        while len(self._done) > _KEEP_DONE:
            self._done.pop(next(iter(self._done)))
        await asyncio.to_thread(self._save, self._since, self._calls_since, dict(self._done))

    async def _journal_missed_call_recording(self, c: CallRecording) -> None:
        """A call recording whose end the service never saw (see the module doc)."""
        incident_id = self._incident_for(c.call_id)
        with structlog.contextvars.bound_contextvars(call_id=c.call_id, incident_id=incident_id):
            info = await describe_recording(c.path)
            started = c.mtime - (info.duration_s or 0.0)
            await self._recorder.recording(c.call_id, info, started_at=started, ended_at=c.mtime)
            log.warning(
                "recording.journalled_late",
                recording=c.path.name,
                empty=info.empty,
                hint="the call ended while the service was away",
            )

    async def _journal(self, f: FallbackFile) -> None:
        incident_id = self._incident_for(f.call_id)
        with structlog.contextvars.bound_contextvars(call_id=f.call_id, incident_id=incident_id):
            info = await describe_recording(f.path)
            started = f.arrived_at
            if f.kind == "fallback":
                await self._recorder.open_call(
                    f.call_id,
                    arrived_at=f.arrived_at,
                    number=f.number,
                    queue="fallback",
                    language=self._language,
                    incident_id=uuid.UUID(incident_id),
                )
                detail: dict[str, DetailValue] = {
                    "mode": "fallback",
                    "recording": f.path.name,
                }
                await self._recorder.timeline(f.call_id, "arrived", f.arrived_at, detail)
            else:
                started = max(f.arrived_at, f.ended_at - (info.duration_s or 0.0))
            await self._recorder.recording(f.call_id, info, started_at=started, ended_at=f.ended_at)
            await self._journal_call_recording(f)
            if f.kind == "fallback":
                await self._recorder.timeline(
                    f.call_id, "hung_up", f.ended_at, {"mode": "fallback", "side": "unknown"}
                )
                await self._recorder.close_call(f.call_id, ended_at=f.ended_at, side="fallback")
            log.warning(
                "fallback.call_journalled",
                kind=f.kind,
                recording=f.path.name,
                hint="this call was carried by the dialplan fallback while the service was away",
            )

    async def _journal_call_recording(self, f: FallbackFile) -> None:
        """The call's own recording (``siaga-call-<uniqueid>``, started in
        [siaga-emergency] before Stasis) ends where the dialplan's begins.
        After a hand-back the service journals it too, unless it stopped
        first; for a call it never saw, it is the moment before Stasis()
        failed. Registering it twice changes nothing."""
        path = self._dir / f"{ids.recording_name(f.call_id)}.wav"
        try:
            info = await describe_recording(path)
        except FileNotFoundError:
            return  # a call from before the call recording, or no audio path at all
        started = f.arrived_at
        ended = started + (info.duration_s or 0.0)
        if info.empty:  # Stasis() failed at once: registered, marked for what it is
            log.info("recording.empty", recording=path.name, size_bytes=info.size_bytes)
        await self._recorder.recording(f.call_id, info, started_at=started, ended_at=ended)
