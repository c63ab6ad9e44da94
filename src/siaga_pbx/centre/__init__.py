"""The centre's configuration as audited data (queues, call takers, agencies,
priority numbers): kept in PostgreSQL with versions, seeded from the settings,
copied locally, applied live to the cores, edited through the HTTP API.

See docs/CONFIG.md.
"""

from ._api import AUDIT, KEEPER, AuditSink, add_centre_routes, audit_change
from ._keeper import CentreKeeper
from ._record import (
    AgencyItem,
    CentreRecord,
    Conflict,
    Invalid,
    NotFound,
    PriorityNumberItem,
    QueueItem,
    Stale,
    TakerItem,
    seed_of,
)
from ._store import ConfigStore, LocalCopy, PgConfigStore, StoreUnavailable

__all__ = [
    "AUDIT",
    "KEEPER",
    "AgencyItem",
    "AuditSink",
    "CentreKeeper",
    "CentreRecord",
    "ConfigStore",
    "Conflict",
    "Invalid",
    "LocalCopy",
    "NotFound",
    "PgConfigStore",
    "PriorityNumberItem",
    "QueueItem",
    "Stale",
    "StoreUnavailable",
    "TakerItem",
    "add_centre_routes",
    "audit_change",
    "seed_of",
]
