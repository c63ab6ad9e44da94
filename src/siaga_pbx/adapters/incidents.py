"""Feeds the incident journal from the core's published state.

The consumer must never wait for a disk or a database, so ``IncidentJournal``
only queues work in memory; its own writer task appends each item, in order,
to the durable local outbox (``siaga_pbx.incidents``), whose relay carries it
to PostgreSQL whenever PostgreSQL is there. A recording is described
(size, SHA-256, duration) off the event loop once Asterisk has finished it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from .. import core
from ..incidents import IncidentRecorder, describe_recording

log = structlog.get_logger(__name__)

_ENDS = {core.CallStage.HUNG_UP, core.CallStage.ABANDONED}


def ends_call(event: core.PublishCallEvent) -> bool:
    """Whether this timeline entry is the end of the call (its row is closed).

    An overflow ends the call only when it sends the caller out of the centre
    (to a dial string, or to the dialplan fallback). An overflow to another of
    our queues names that queue in ``to_queue``: the caller still waits there.
    (The ``call_times`` view, migration 0006, applies the same rule.)
    """
    if event.stage is core.CallStage.OVERFLOWED:
        return "to_queue" not in event.detail
    return event.stage in _ENDS


_GROUP_MAX = 500  # jobs written together at most
_RECORDINGS_MEMORY = 10_000  # recording files remembered as journalled by us


@dataclass(frozen=True, slots=True)
class _Job:
    call_id: str | None
    incident_id: str | None
    job: Callable[[], Awaitable[object]]
    appends_at_once: bool  # its first await is the outbox append (see ``run``)


class IncidentJournal:
    """An ``Observer`` of the service that journals incidents. Run ``run()``."""

    def __init__(
        self,
        recorder: IncidentRecorder,
        recording_dir: Path,
        *,
        language: str = "id",
        clock: Callable[[], float] = time.time,
        on_recording_missing: Callable[[], None] | None = None,
    ) -> None:
        self._recorder = recorder
        self._recording_dir = recording_dir
        self._on_recording_missing = on_recording_missing
        self._language = language
        self._clock = clock
        self._work: asyncio.Queue[_Job] = asyncio.Queue()
        self._arrivals: dict[str, float] = {}
        self._recordings: OrderedDict[str, None] = OrderedDict()  # file names journalled
        self.written = 0
        self.failed = 0

    @property
    def backlog(self) -> int:
        return self._work.qsize()

    def _put(
        self,
        call_id: str | None,
        incident_id: str | None,
        job: Callable[[], Awaitable[object]],
        *,
        appends_at_once: bool = True,
    ) -> None:
        self._work.put_nowait(_Job(call_id, incident_id, job, appends_at_once))

    # ---- Observer ------------------------------------------------------

    def call_arrived(self, event: core.CallerArrived, at: float, incident_id: str) -> None:
        self._arrivals[event.call_id] = at
        who = event.caller

        async def job() -> object:
            return await self._recorder.open_call(
                event.call_id,
                arrived_at=at,
                number=who.number,
                name=who.name,
                pai=who.pai,
                trunk=event.trunk,
                queue=event.queue,
                language=self._language,
                incident_id=uuid.UUID(incident_id),
                recovered=event.recovered,
                from_header_raw=who.from_raw,
                pai_header_raw=who.pai_raw,
            )

        self._put(event.call_id, incident_id, job)

    def published(self, item: object, incident_id: str | None) -> None:
        if isinstance(item, core.PublishCallEvent):
            ev = item

            async def timeline() -> object:
                return await self._recorder.publish(ev)

            self._put(ev.call_id, incident_id, timeline)
            if ends_call(ev):
                self._arrivals.pop(ev.call_id, None)
                detail = ev.detail

                async def close() -> object:
                    return await self._recorder.close_call(
                        ev.call_id,
                        ended_at=ev.at,
                        side=str(detail.get("side", ev.stage.value)),
                        cause=str(detail.get("cause", "")),
                    )

                self._put(ev.call_id, incident_id, close)
        elif isinstance(item, core.AddCallback):
            entry = item.entry

            async def callback() -> object:
                return await self._recorder.callback(entry)

            self._put(entry.call_id, incident_id, callback)
        elif isinstance(item, core.ResolveCallback):
            resolved = item

            async def resolve() -> object:
                return await self._recorder.resolve_callback(resolved)

            self._put(resolved.call_id, incident_id, resolve)

    def journalled(self, file_name: str) -> bool:
        """True if this run was asked to journal recording ``file_name`` (the
        fallback sweeper leaves those to us)."""
        return file_name in self._recordings

    def recording_done(self, call_id: str, name: str, incident_id: str | None) -> None:
        ended = self._clock()
        path = self._recording_dir / f"{name}.wav"
        self._recordings[path.name] = None
        while len(self._recordings) > _RECORDINGS_MEMORY:
            self._recordings.popitem(last=False)

        async def job() -> object:
            try:
                info = await describe_recording(path)
            except FileNotFoundError:
                # Never silent: the timeline says so, and so do the log and a metric.
                log.error("recording.missing", name=name, path=str(path))  # noqa: TRY400 - no traceback helps here
                if self._on_recording_missing is not None:
                    self._on_recording_missing()
                return await self._recorder.timeline(
                    call_id, "recording_failed", ended, {"name": name, "reason": "file missing"}
                )
            started = ended - (info.duration_s or 0.0)
            return await self._recorder.recording(call_id, info, started_at=started, ended_at=ended)

        self._put(call_id, incident_id, job, appends_at_once=False)

    # ---- writer ----------------------------------------------------------

    async def run(self) -> None:
        """Write queued jobs in order, many at a time.

        Jobs that append at once (their first await is the outbox append) run
        together: started in queue order, they reach the outbox in that order
        and share its transactions (group commit), instead of one fsync each.
        A job that works first (a recording being described) runs alone,
        after everything before it, so nothing queued later overtakes it."""
        while True:
            group = [await self._work.get()]
            while group[-1].appends_at_once and len(group) < _GROUP_MAX:
                try:
                    nxt = self._work.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if not nxt.appends_at_once:
                    await self._write(group)  # the slow one starts after these
                    group = []
                group.append(nxt)
            await self._write(group)

    async def _write(self, group: list[_Job]) -> None:
        try:
            await asyncio.gather(*(self._one(j) for j in group))
        finally:
            for _ in group:
                self._work.task_done()

    async def _one(self, item: _Job) -> None:
        with structlog.contextvars.bound_contextvars(
            call_id=item.call_id, incident_id=item.incident_id
        ):
            try:
                await item.job()
                self.written += 1
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failed += 1
                log.exception("incident.journal_failed")

    async def flush(self) -> None:
        """Wait until everything queued so far is in the durable outbox."""
        await self._work.join()
