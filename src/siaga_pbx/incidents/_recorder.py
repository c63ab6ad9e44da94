"""``IncidentRecorder``: what the call-handling service calls. Every method
only appends one op to the local outbox (a fast local fsync, no network), so
PostgreSQL being slow or down never delays a call."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Literal

from siaga_pbx.core import CallbackEntry, CallStage, PublishCallEvent, ResolveCallback

from ._ops import (
    AddCallbackEntry,
    AppendTimeline,
    CloseCall,
    DetailValue,
    OpenIncident,
    RegisterRecording,
    ResolveCallbackEntry,
)
from ._outbox import Outbox
from ._recordings import RecordingInfo

__all__ = ["IncidentRecorder"]


class IncidentRecorder:
    """Facade over ``Outbox``; each method returns the op's outbox ``seq``
    except ``open_call``, which returns the incident id."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def __repr__(self) -> str:
        return f"<IncidentRecorder {self.outbox!r}>"

    async def open_call(
        self,
        call_id: str,
        *,
        arrived_at: float,
        number: str = "",
        name: str = "",
        pai: str = "",
        trunk: str = "",
        queue: str = "",
        language: str = "",
        incident_id: uuid.UUID | None = None,
        recovered: bool = False,
        from_header_raw: bytes = b"",
        pai_header_raw: bytes = b"",
    ) -> uuid.UUID:
        """Record a call's arrival and open its incident (a fresh id unless
        ``incident_id`` names an existing incident to attach the call to).
        ``recovered``: see ``OpenIncident.recovered``; ``*_header_raw``: the
        From / P-Asserted-Identity headers' exact bytes."""
        incident = incident_id if incident_id is not None else uuid.uuid4()
        await self.outbox.append(
            OpenIncident(
                call_id=call_id,
                incident_id=incident,
                arrived_at=arrived_at,
                caller_number=number,
                caller_name=name,
                pai=pai,
                trunk=trunk,
                queue=queue,
                language=language,
                recovered=recovered,
                from_header_raw=from_header_raw,
                pai_header_raw=pai_header_raw,
            )
        )
        return incident

    async def timeline(
        self,
        call_id: str,
        stage: CallStage | str,
        at: float,
        detail: Mapping[str, DetailValue] | None = None,
    ) -> int:
        """Append one timeline entry."""
        return await self.outbox.append(AppendTimeline(call_id, stage, at, dict(detail or {})))

    async def publish(self, event: PublishCallEvent) -> int:
        """Append the core's ``PublishCallEvent`` as a timeline entry."""
        return await self.timeline(event.call_id, event.stage, event.at, event.detail)

    async def recording(
        self,
        call_id: str,
        info: RecordingInfo,
        *,
        started_at: float,
        ended_at: float | None = None,
    ) -> int:
        """Register a finished recording (``info`` from ``describe_recording``);
        one without audio is registered too, marked ``empty``."""
        return await self.outbox.append(
            RegisterRecording(
                call_id=call_id,
                path=info.path,
                started_at=started_at,
                ended_at=ended_at,
                duration_s=info.duration_s,
                size_bytes=info.size_bytes,
                sha256=info.sha256,
                empty=info.empty,
            )
        )

    async def callback(self, entry: CallbackEntry) -> int:
        """Record the core's ``CallbackEntry`` (an abandoned caller to call back)."""
        where: Literal["waiting", "ringing"]
        if entry.where == "waiting":
            where = "waiting"
        elif entry.where == "ringing":
            where = "ringing"
        else:
            raise ValueError(f"callback where must be waiting|ringing, not {entry.where!r}")
        return await self.outbox.append(
            AddCallbackEntry(
                call_id=entry.call_id,
                number=entry.number,
                arrived_at=entry.arrived_at,
                abandoned_at=entry.abandoned_at,
                queue=entry.queue,
                where=where,
            )
        )

    async def resolve_callback(self, resolved: ResolveCallback) -> int:
        """Record the core's ``ResolveCallback`` (a pending callback dealt with)."""
        return await self.outbox.append(
            ResolveCallbackEntry(
                call_id=resolved.call_id,
                resolution=resolved.resolution.value,
                resolved_by=resolved.by,
                resolved_at=resolved.at,
                note=resolved.note,
            )
        )

    async def close_call(
        self, call_id: str, *, ended_at: float, side: str = "", cause: int | str = ""
    ) -> int:
        """Record the end of a call: when, who hung up (a ``HangupSide`` or its
        value), and the (Q.850) cause."""
        side_text = str(side.value) if isinstance(side, Enum) else side
        return await self.outbox.append(CloseCall(call_id, ended_at, side_text, str(cause)))
