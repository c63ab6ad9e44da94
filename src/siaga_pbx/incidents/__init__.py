"""Incident records in PostgreSQL that are never lost, even when the database is down.

- ``IncidentRecorder`` (used while calls run) appends ops to a durable local
  ``Outbox`` (SQLite, WAL, fsync per op): fast, no network.
- ``OutboxRelay`` drains the outbox to PostgreSQL in order, exactly once,
  backing off while PostgreSQL is down; ops PostgreSQL rejects permanently are
  parked in a local dead-letter table, never dropped.
- ``migrate`` creates the schema (numbered SQL files, advisory-locked).
- ``IncidentStore`` + ``add_incident_routes``: the REST API for staff.
- Callbacks: PostgreSQL is the record of pending callbacks.
  ``CallbackRestorer`` reads them back at start; ``add_callback_routes``
  lists and resolves them (through the core).
- The audit of every action: ``OutboxAuditSink`` (the service's audit sink,
  ``AppendAudit`` ops through the outbox), ``add_audit_routes``
  (``GET /api/audit``), ``write_audit_now`` (the CLI).
- ``purge``: retention, audited. ``describe_recording``: size/sha256/duration.
"""

from ._api import INCIDENT_STORE, add_incident_routes
from ._api_models import CATEGORIES, DISPOSITIONS, IncidentPatch, ListParams
from ._audit import (
    AuditQuery,
    AuditStore,
    OutboxAuditSink,
    add_audit_routes,
    audit_op,
    write_audit_now,
)
from ._callbacks import CallbackRestorer
from ._callbacks_api import add_callback_routes
from ._migrate import MigrationError, migrate, migration_files
from ._ops import (
    AUDIT_OUTCOMES,
    AddCallbackEntry,
    AppendAudit,
    AppendTimeline,
    CloseCall,
    DetailValue,
    Op,
    OpenIncident,
    RegisterRecording,
    ResolveCallbackEntry,
    decode_op,
    encode_op,
)
from ._outbox import DeadLetter, Outbox, OutboxEntry
from ._purge import PurgeReport, purge
from ._recorder import IncidentRecorder
from ._recordings import RecordingInfo, describe_recording, describe_recording_sync
from ._relay import OutboxRelay, is_permanent_error
from ._store import (
    HistoryEntry,
    IncidentPage,
    IncidentQuery,
    IncidentStore,
    InvalidCursor,
    RecordingRow,
    decode_cursor,
    encode_cursor,
)
from ._text import storable

__all__ = [
    "AUDIT_OUTCOMES",
    "CATEGORIES",
    "DISPOSITIONS",
    "INCIDENT_STORE",
    "AddCallbackEntry",
    "AppendAudit",
    "AppendTimeline",
    "AuditQuery",
    "AuditStore",
    "CallbackRestorer",
    "CloseCall",
    "DeadLetter",
    "DetailValue",
    "HistoryEntry",
    "IncidentPage",
    "IncidentPatch",
    "IncidentQuery",
    "IncidentRecorder",
    "IncidentStore",
    "InvalidCursor",
    "ListParams",
    "MigrationError",
    "Op",
    "OpenIncident",
    "Outbox",
    "OutboxAuditSink",
    "OutboxEntry",
    "OutboxRelay",
    "PurgeReport",
    "RecordingInfo",
    "RecordingRow",
    "RegisterRecording",
    "ResolveCallbackEntry",
    "add_audit_routes",
    "add_callback_routes",
    "add_incident_routes",
    "audit_op",
    "decode_cursor",
    "decode_op",
    "describe_recording",
    "describe_recording_sync",
    "encode_cursor",
    "encode_op",
    "is_permanent_error",
    "migrate",
    "migration_files",
    "purge",
    "storable",
    "write_audit_now",
]
