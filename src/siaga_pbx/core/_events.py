"""Events fed into the call-distribution core.

Every event is a small frozen dataclass that checks its own fields, so that a
malformed value is rejected where it is built (in the ARI translation layer or
the HTTP API), never deep inside the core. Events carry no timestamps: the
core's ``handle(event, now)`` takes time as a separate input.

Identifiers:
- ``call_id``: our id for one caller's call (derived from the caller channel).
- ``attempt_id``: one offer of one call to one call taker's handset; it is also
  the id of the handset channel we originate (see ``siaga_pbx.ids``).
- ``taker_id``: a configured call taker (see ``CentreConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from ._commands import Command
    from ._config import CentreConfig


def _require(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def _check_id(name: str, value: str) -> None:
    _require(isinstance(value, str) and 0 < len(value) <= 128, f"{name} must be 1..128 chars")
    _require(value.isprintable() and " " not in value, f"{name} must be printable, no spaces")


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who the network says is calling. Any field may be empty; never trusted."""

    number: str = ""
    name: str = ""
    pai: str = ""  # P-Asserted-Identity number, when the trunk sent one
    # The From and P-Asserted-Identity headers' exact bytes, as evidence (the
    # fields above are cleaned). The core never reads them; they ride along to
    # the incident record. Bounded, so a waiting caller's memory is too.
    from_raw: bytes = field(default=b"", repr=False)
    pai_raw: bytes = field(default=b"", repr=False)

    def __post_init__(self) -> None:
        for name, value, limit in (
            ("number", self.number, 64),
            ("name", self.name, 2048),
            ("pai", self.pai, 64),
        ):
            _require(isinstance(value, str), f"caller {name} must be a string")
            _require(len(value) <= limit, f"caller {name} longer than {limit} chars")
        for name, raw in (("from_raw", self.from_raw), ("pai_raw", self.pai_raw)):
            _require(isinstance(raw, bytes), f"caller {name} must be bytes")
            _require(len(raw) <= 8192, f"caller {name} longer than 8192 bytes")

    @property
    def best_number(self) -> str:
        """The number to call back: PAI is network-asserted, so it wins."""
        return self.pai or self.number


class HandsetFailure(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    BUSY = "busy"
    UNREACHABLE = "unreachable"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"


class HangupSide(str, Enum):  # noqa: UP042 - contract enum: str mixin kept, other modules rely on str()
    CALLER = "caller"
    TAKER = "taker"
    SYSTEM = "system"


# ---- callers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallerArrived:
    """A 112 call entered our Stasis app on ``queue`` (already answered or not).

    ``recovered``: not a new arrival but a caller a restarted service found in
    its app, whose arrival an earlier run may or may not have journalled; the
    incident store records it at most once (no ARRIVED entry from the core).
    ``answered``: the channel was already up (the dialplan answered it), so
    answering it again would only cost a request."""

    call_id: str
    caller: CallerIdentity
    queue: str
    trunk: str = ""
    recovered: bool = False
    answered: bool = False

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("queue", self.queue)
        _require(len(self.trunk) <= 128, "trunk longer than 128 chars")


@dataclass(frozen=True, slots=True)
class CallerHungUp:
    """The caller's channel is gone (in any state of the call)."""

    call_id: str
    cause: int = 16  # Q.850 cause code

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


@dataclass(frozen=True, slots=True)
class PromptFinished:
    """A prompt started by ``PlayPrompt`` ended (played out or stopped)."""

    call_id: str
    playback_id: str

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("playback_id", self.playback_id)


@dataclass(frozen=True, slots=True)
class TakerHandedOver:
    """The taker left a connected call to the dispatcher(s) conferenced in
    (``siaga_pbx.conference``). The caller's side stays up and is no longer
    the distribution core's: the taker is free, the handset released."""

    call_id: str

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


# ---- handsets --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandsetRinging:
    """The handset of an offer is ringing (SIP 180/183)."""

    attempt_id: str

    def __post_init__(self) -> None:
        _check_id("attempt_id", self.attempt_id)


@dataclass(frozen=True, slots=True)
class HandsetAnswered:
    """The call taker picked up the offer: its channel is in our app, unbridged."""

    attempt_id: str

    def __post_init__(self) -> None:
        _check_id("attempt_id", self.attempt_id)


@dataclass(frozen=True, slots=True)
class HandsetFailed:
    """The offer ended before it was answered."""

    attempt_id: str
    reason: HandsetFailure

    def __post_init__(self) -> None:
        _check_id("attempt_id", self.attempt_id)
        _require(isinstance(self.reason, HandsetFailure), "reason must be a HandsetFailure")


@dataclass(frozen=True, slots=True)
class HandsetHungUp:
    """An answered offer's handset channel is gone (taker hung up or dropped)."""

    attempt_id: str
    cause: int = 16

    def __post_init__(self) -> None:
        _check_id("attempt_id", self.attempt_id)


@dataclass(frozen=True, slots=True)
class HandsetLost:
    """The handset of an offer stopped answering SIP (its contact became
    unreachable) while ringing or in a call: the phone is gone without a BYE.
    Unlike ``HandsetHungUp`` the channel is still up in Asterisk: the core
    releases it. ``evidence`` says how the loss was seen, for the timeline."""

    attempt_id: str
    evidence: str = "contact-unreachable"

    def __post_init__(self) -> None:
        _check_id("attempt_id", self.attempt_id)


@dataclass(frozen=True, slots=True)
class TakerDeviceChanged:
    """SIP device state of a taker's handset changed.

    ``reachable``: registered / qualified. ``in_use``: the handset is busy or
    ringing (Asterisk device state); such a taker is not offered calls. This
    includes our own offer or call on it, which is harmless: a taker we rang
    is not offerable anyway, and becomes offerable again once the handset
    reports itself free.
    """

    taker_id: str
    reachable: bool
    in_use: bool = False

    def __post_init__(self) -> None:
        _check_id("taker_id", self.taker_id)


# ---- call takers -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TakerLoggedIn:
    taker_id: str

    def __post_init__(self) -> None:
        _check_id("taker_id", self.taker_id)


@dataclass(frozen=True, slots=True)
class TakerLoggedOut:
    taker_id: str

    def __post_init__(self) -> None:
        _check_id("taker_id", self.taker_id)


@dataclass(frozen=True, slots=True)
class TakerPaused:
    taker_id: str
    reason: str = "break"

    def __post_init__(self) -> None:
        _check_id("taker_id", self.taker_id)
        _require(0 < len(self.reason) <= 64, "pause reason must be 1..64 chars")


@dataclass(frozen=True, slots=True)
class TakerUnpaused:
    taker_id: str

    def __post_init__(self) -> None:
        _check_id("taker_id", self.taker_id)


# ---- the rest --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer started by ``StartTimer`` expired (and was not cancelled)."""

    timer_id: str

    def __post_init__(self) -> None:
        _check_id("timer_id", self.timer_id)


@dataclass(frozen=True, slots=True)
class CallbackEntry:
    """An abandoned caller the centre must call back."""

    call_id: str
    number: str
    arrived_at: float
    abandoned_at: float
    queue: str
    where: str  # "waiting" or "ringing"

    @property
    def wait_s(self) -> float:
        return self.abandoned_at - self.arrived_at


class CallbackResolution(str, Enum):  # noqa: UP042 - str mixin like the other contract enums
    """How a pending callback was dealt with."""

    CALLED_BACK = "called_back"  # a taker called the caller back and spoke with them
    CALLED_AGAIN = "called_again"  # the caller rang 112 again and was answered
    UNREACHABLE = "unreachable"  # tried, and given up: nobody answered
    NOT_NEEDED = "not_needed"  # judged not needed (a test call, a known misdial ...)


@dataclass(frozen=True, slots=True)
class CallbackResolved:
    """A pending callback was dealt with, ``resolution`` says how and ``by``
    says who (for the audit); it leaves the core's list of pending callbacks."""

    call_id: str
    resolution: CallbackResolution
    by: str
    note: str = ""

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _require(
            isinstance(self.resolution, CallbackResolution),
            "resolution must be a CallbackResolution",
        )
        _require(
            isinstance(self.by, str) and 0 < len(self.by) <= 128 and self.by.isprintable(),
            "by must be 1..128 printable chars",
        )
        _require(isinstance(self.note, str) and len(self.note) <= 500, "note: at most 500 chars")


@dataclass(frozen=True, slots=True)
class CallbacksRestored:
    """Pending callbacks read back from the record (PostgreSQL) after a
    restart. The core keeps those it does not hold yet, within its bound."""

    entries: tuple[CallbackEntry, ...]

    def __post_init__(self) -> None:
        _require(isinstance(self.entries, tuple), "entries must be a tuple")
        for e in self.entries:
            _require(isinstance(e, CallbackEntry), "entries must be CallbackEntry")
            _check_id("call_id", e.call_id)


@dataclass(frozen=True, slots=True)
class ConfigChanged:
    """Admins changed the live configuration. Calls in progress keep going."""

    config: CentreConfig


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """The I/O shell could not carry out ``command``; the core must recover."""

    command: Command
    reason: str


Event = Union[  # noqa: UP007 - contract: kept as written
    CallerArrived,
    CallerHungUp,
    PromptFinished,
    HandsetRinging,
    HandsetAnswered,
    HandsetFailed,
    HandsetHungUp,
    HandsetLost,
    TakerDeviceChanged,
    TakerLoggedIn,
    TakerLoggedOut,
    TakerPaused,
    TakerUnpaused,
    TimerFired,
    ConfigChanged,
    CommandFailed,
    CallbackResolved,
    CallbacksRestored,
    TakerHandedOver,
]
