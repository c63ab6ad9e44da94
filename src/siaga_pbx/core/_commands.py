"""Commands the call-distribution core asks the I/O shell to carry out.

The shell runs them in the order given. A command that fails comes back to the
core as ``CommandFailed``; the core never assumes I/O succeeded beyond what the
following events confirm.

``Publish*`` commands do no telephony: they announce state changes to the rest
of the service (incident store, metrics, live dashboards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Union

from ._events import CallbackEntry, CallbackResolution, CallerIdentity


class HoldMode(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    MUSIC = "music"  # music on hold
    RINGBACK = "ringback"  # the caller hears ringing


# ---- caller side -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnswerCaller:
    """Answer the caller (unless ``answered``: already up) and give the call
    its bridge."""

    call_id: str
    answered: bool = False


@dataclass(frozen=True, slots=True)
class PlayPrompt:
    """Play a prompt to the caller. ``prompt`` is a logical name the shell maps
    to a sound: "greeting", "reassurance", "position:<n>", "overflow"."""

    call_id: str
    playback_id: str
    prompt: str


@dataclass(frozen=True, slots=True)
class StopPrompt:
    call_id: str
    playback_id: str


@dataclass(frozen=True, slots=True)
class StartHold:
    call_id: str
    mode: HoldMode
    music_class: str = "default"


@dataclass(frozen=True, slots=True)
class StopHold:
    call_id: str
    mode: HoldMode


# ---- handsets --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RingHandset:
    """Originate ``attempt_id`` to ``endpoint`` (e.g. "PJSIP/taker1") showing
    the caller's identity; its answer comes back as ``HandsetAnswered``."""

    attempt_id: str
    call_id: str
    taker_id: str
    endpoint: str
    timeout_s: float
    caller: CallerIdentity


@dataclass(frozen=True, slots=True)
class CancelRing:
    attempt_id: str


@dataclass(frozen=True, slots=True)
class ConnectCall:
    """Bridge the caller with the answered offer ``attempt_id``. The bridge id
    derives from ``call_id`` (the call is recorded on the caller's channel)."""

    call_id: str
    attempt_id: str
    taker_id: str


@dataclass(frozen=True, slots=True)
class ReleaseHandset:
    """Hang up an answered handset whose caller is gone."""

    attempt_id: str


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over for us: tear down the bridge and anything left of the
    caller's side (the caller channel is hung up if still present)."""

    call_id: str


@dataclass(frozen=True, slots=True)
class RedirectCaller:
    """Overflow to a destination outside this service: a dial string to a
    backup centre. The shell hands the caller to the dialplan's overflow
    context, which dials it; the caller is never dropped."""

    call_id: str
    dial: str


# ---- timers ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Fire ``TimerFired(timer_id)`` at time ``at`` (same clock as ``now``).
    Starting an id that is already running restarts it."""

    timer_id: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


# ---- publishing ------------------------------------------------------------


class CallStage(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    """Timeline entries of a call, in the words of the incident record."""

    ARRIVED = "arrived"
    GREETED = "greeted"
    QUEUED = "queued"
    OFFERED = "offered"  # rung at a taker
    OFFER_FAILED = "offer_failed"
    ANSWERED = "answered"
    TAKER_LEFT = "taker_left"
    REQUEUED = "requeued"
    OVERFLOWED = "overflowed"
    ABANDONED = "abandoned"
    CALLBACK_ATTEMPTED = "callback_attempted"
    CALLBACK_CONNECTED = "callback_connected"
    HUNG_UP = "hung_up"
    # The taker left a call to the dispatcher(s) conferenced in (issue 5).
    HANDED_OVER = "handed_over"
    # Conference timeline (siaga_pbx.conference): who joined and left, when, in which role.
    DISPATCHER_RINGING = "dispatcher_ringing"
    DISPATCHER_JOINED = "dispatcher_joined"
    DISPATCHER_FAILED = "dispatcher_failed"
    DISPATCHER_CANCELLED = "dispatcher_cancelled"
    DISPATCHER_ROLE = "dispatcher_role"
    DISPATCHER_LEFT = "dispatcher_left"
    SUPERVISOR = "supervisor"  # audit: detail["audit"] is True
    CONFERENCE_REFUSED = "conference_refused"  # a keypad/API request that could not be done


@dataclass(frozen=True, slots=True)
class PublishCallEvent:
    """One timeline entry for ``call_id``. ``detail`` holds stage-specific,
    JSON-safe values (taker_id, queue, reason, cause, side, wait_s ...)."""

    call_id: str
    stage: CallStage
    at: float
    detail: dict[str, str | int | float | bool] = field(default_factory=dict)


class TakerStatus(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    OFFLINE = "offline"
    AVAILABLE = "available"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class PublishTakerState:
    taker_id: str
    status: TakerStatus
    at: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class AddCallback:
    entry: CallbackEntry


@dataclass(frozen=True, slots=True)
class ResolveCallback:
    """Record that the callback of ``call_id`` was dealt with (the journal
    marks it resolved in PostgreSQL, the record of pending callbacks, and
    writes it in the incident's timeline). Published for every
    ``CallbackResolved``, also for a callback the core no longer holds in
    memory: the record resolves it if it is still pending there."""

    call_id: str
    resolution: CallbackResolution
    by: str
    at: float
    note: str = ""


Command = Union[  # noqa: UP007 - contract: kept as written
    AnswerCaller,
    PlayPrompt,
    StopPrompt,
    StartHold,
    StopHold,
    RingHandset,
    CancelRing,
    ConnectCall,
    ReleaseHandset,
    EndCall,
    RedirectCaller,
    StartTimer,
    CancelTimer,
    PublishCallEvent,
    PublishTakerState,
    AddCallback,
    ResolveCallback,
]
