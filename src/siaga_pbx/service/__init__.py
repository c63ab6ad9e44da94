"""The service shell around the two pure cores (``core``, ``conference``).

- ``_consumer``: ``CallService``, the one consumer task: inbox, both cores, timers,
  and the per-call lanes that carry out every Asterisk request.
- ``_translate``: the one translator from ARI events to both cores' events.
- ``_coordinator``: the pure glue between the cores (connected, ended, handover).
- ``_recovery``: rebuilding both cores from what Asterisk holds after a (re)connect.
- ``_lanes``: per-call ordered, cross-call concurrent execution.

Adapters (``siaga_pbx.adapters``) do the I/O and never import this package;
``siaga_pbx.runtime`` wires them together.
"""

from ._consumer import (
    RESYNC_RETRY_S,
    TELEPHONY_COMMANDS,
    CallerLookedUp,
    CallService,
    CommandDone,
    Observer,
    Published,
    RecordingDue,
    Resync,
    Telephony,
    TelephonyCommand,
    TimerDue,
    incident_id_for,
    lane_of,
)
from ._lanes import Lanes
from ._recovery import resynchronise
from ._translate import (
    EVENTS_USED,
    FeatureRequest,
    HandBack,
    TakerDirectory,
    Translated,
    caller_arrived,
    caller_identity_of,
    feature_event,
    translate,
)

__all__ = [
    "EVENTS_USED",
    "RESYNC_RETRY_S",
    "TELEPHONY_COMMANDS",
    "CallService",
    "CallerLookedUp",
    "CommandDone",
    "FeatureRequest",
    "HandBack",
    "Lanes",
    "Observer",
    "Published",
    "RecordingDue",
    "Resync",
    "TakerDirectory",
    "Telephony",
    "TelephonyCommand",
    "TimerDue",
    "Translated",
    "caller_arrived",
    "caller_identity_of",
    "feature_event",
    "incident_id_for",
    "lane_of",
    "resynchronise",
    "translate",
]
