"""Events fed into the conference core.

Small frozen dataclasses that check their own fields. Time is not in them:
``Conferences.handle(event, now)`` takes it separately. The conference core
also accepts the distribution core's ``TimerFired`` for its own timers.

Identifiers: ``call_id`` is the distribution core's (the caller's channel);
``leg_id`` is a party's phone channel ``siaga-disp-<call_id>-<n>``;
``snoop_id`` a snoop channel ``siaga-snoop-<call_id>-<n>`` (same ``n``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Union

from ..core._events import _check_id, _require
from ._config import ENDPOINT, AgencyDirectory, Role, SuperviseMode

if TYPE_CHECKING:
    from ._commands import Command

By = Literal["keypad", "api"]
KEYS = frozenset("0123456789*#")


# ---- the call, as the distribution core drives it ----------------------------


@dataclass(frozen=True, slots=True)
class CallConnected:
    """A taker's handset (``taker_channel``, an offer channel) joined the call's bridge."""

    call_id: str
    taker_channel: str
    taker_id: str = ""

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("taker_channel", self.taker_channel)


@dataclass(frozen=True, slots=True)
class TakerLeft:
    """The taker's handset left the call without a handover (hung up or dropped)."""

    call_id: str
    taker_channel: str

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("taker_channel", self.taker_channel)


@dataclass(frozen=True, slots=True)
class CallerLeft:
    """The caller's channel is gone."""

    call_id: str
    cause: int = 16

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The distribution core tore the call down (EndCall / RedirectCaller ran)."""

    call_id: str

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


# ---- requests (taker keypad or API) ------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPressed:
    """A DTMF digit on a channel of ours (only a taker's offer channel counts)."""

    channel_id: str
    digit: str

    def __post_init__(self) -> None:
        _check_id("channel_id", self.channel_id)
        _require(len(self.digit) == 1 and self.digit in KEYS, "digit must be 0-9, * or #")


@dataclass(frozen=True, slots=True)
class AddAgency:
    call_id: str
    agency: str
    by: By = "api"
    role: Role | None = None  # None: the agency's default

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("agency", self.agency)


@dataclass(frozen=True, slots=True)
class AddMassIncident:
    """Add every mass-incident agency not already in (or ringing for) the call."""

    call_id: str
    by: By = "api"

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


@dataclass(frozen=True, slots=True)
class RemoveAgency:
    """Drop the agency's dispatcher, or stop ringing it."""

    call_id: str
    agency: str
    by: By = "api"

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("agency", self.agency)


@dataclass(frozen=True, slots=True)
class SetRole:
    """Switch a joined dispatcher between TALK and LISTEN (``None``: toggle)."""

    call_id: str
    agency: str
    role: Role | None = None
    by: By = "api"

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("agency", self.agency)
        _require(self.role is not Role.WHISPER, "a role change is between talk and listen")


@dataclass(frozen=True, slots=True)
class HandOver:
    """The taker leaves; the caller stays with the talking dispatcher(s)."""

    call_id: str
    by: By = "api"

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)


@dataclass(frozen=True, slots=True)
class Supervise:
    """A supervisor listens to, whispers to the taker of, or barges into a call."""

    call_id: str
    supervisor: str
    endpoint: str
    mode: SuperviseMode

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("supervisor", self.supervisor)
        _require(bool(ENDPOINT.match(self.endpoint)), "endpoint must be PJSIP/<name>")
        _require(isinstance(self.mode, SuperviseMode), "mode must be a SuperviseMode")


@dataclass(frozen=True, slots=True)
class EndSupervision:
    call_id: str
    supervisor: str

    def __post_init__(self) -> None:
        _check_id("call_id", self.call_id)
        _check_id("supervisor", self.supervisor)


# ---- party channels ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartyAnswered:
    """A party's phone answered: its leg entered our app, unbridged."""

    leg_id: str

    def __post_init__(self) -> None:
        _check_id("leg_id", self.leg_id)


@dataclass(frozen=True, slots=True)
class PartyGone:
    """A party's leg is gone (before answer: a failed ring; after: a hangup)."""

    leg_id: str
    cause: int = 16

    def __post_init__(self) -> None:
        _check_id("leg_id", self.leg_id)


@dataclass(frozen=True, slots=True)
class PartyLost:
    """A party's phone stopped answering SIP (its contact became unreachable)
    while ringing or in the call: gone without a BYE, its leg still up in
    Asterisk."""

    leg_id: str

    def __post_init__(self) -> None:
        _check_id("leg_id", self.leg_id)


@dataclass(frozen=True, slots=True)
class SnoopReady:
    """A snoop channel we asked for entered our app."""

    snoop_id: str

    def __post_init__(self) -> None:
        _check_id("snoop_id", self.snoop_id)


@dataclass(frozen=True, slots=True)
class DirectoryChanged:
    """The agency directory was reloaded. Calls in progress keep their parties."""

    directory: AgencyDirectory


@dataclass(frozen=True, slots=True)
class PartyCommandFailed:
    """The shell could not carry out ``command``."""

    command: Command
    reason: str


# ---- recovery input (not an event: see ``Conferences.adopt``) ------------------


@dataclass(frozen=True, slots=True)
class AdoptedParty:
    """A party Asterisk still holds after our restart, as its leg records it
    (``SIAGA_PARTY`` = ``<kind>:<who>:<origin>``, ``SIAGA_ROLE``).

    ``snoop_id``: the private snoop bridge the leg sits in (whisper, listen);
    None: the leg is in the call bridge."""

    leg_id: str
    kind: Literal["dispatcher", "supervisor"]
    who: str
    origin: str
    endpoint: str
    role: str  # a Role value (dispatchers) or a SuperviseMode value (supervisors)
    snoop_id: str | None = None

    def __post_init__(self) -> None:
        _check_id("leg_id", self.leg_id)
        _require(self.kind in ("dispatcher", "supervisor"), f"bad party kind {self.kind!r}")
        _require(bool(self.who) and bool(self.origin), "a party needs who and origin")
        valid = Role if self.kind == "dispatcher" else SuperviseMode
        _require(self.role in {v.value for v in valid}, f"bad role {self.role!r}")
        if self.snoop_id is not None:
            _check_id("snoop_id", self.snoop_id)

    @classmethod
    def from_tags(
        cls, leg_id: str, endpoint: str, party: str, role: str, snoop_id: str | None
    ) -> AdoptedParty:
        """Parse the leg's variables; raises ValueError on anything malformed."""
        kind, _, rest = party.partition(":")
        who, _, origin = rest.partition(":")
        if kind not in ("dispatcher", "supervisor"):
            raise ValueError(f"bad SIAGA_PARTY {party!r}")
        return cls(leg_id, kind, who, origin, endpoint, role, snoop_id)  # type: ignore[arg-type]


Event = Union[  # noqa: UP007 - same shape as the distribution core's contract
    CallConnected,
    TakerLeft,
    CallerLeft,
    CallEnded,
    KeyPressed,
    AddAgency,
    AddMassIncident,
    RemoveAgency,
    SetRole,
    HandOver,
    Supervise,
    EndSupervision,
    PartyAnswered,
    PartyGone,
    PartyLost,
    SnoopReady,
    DirectoryChanged,
    PartyCommandFailed,
]
