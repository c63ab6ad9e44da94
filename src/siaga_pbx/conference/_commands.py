"""Commands the conference core asks the I/O shell to carry out.

Besides these, the core emits the distribution core's ``StartTimer``,
``CancelTimer`` and ``PublishCallEvent`` (timeline entries), which the
service already knows how to run. A command that fails comes back as
``PartyCommandFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Union

from ..core import CancelTimer, PublishCallEvent, StartTimer


class Tone(StrEnum):
    JOINED = "joined"  # someone joined
    LEFT = "left"  # someone left
    FAILED = "failed"  # the taker's request could not be done (taker only)


class Direction(StrEnum):
    NONE = "none"
    BOTH = "both"
    OUT = "out"
    IN = "in"


@dataclass(frozen=True, slots=True)
class RingParty:
    """Originate ``leg_id`` to ``endpoint``; its answer comes back as ``PartyAnswered``."""

    leg_id: str
    call_id: str
    endpoint: str
    timeout_s: float
    label: str  # shown on the dispatcher's phone ("112 Damkar")
    # "<kind>:<who>:<origin>", kept on the leg itself (channel variable
    # SIAGA_PARTY) so that a restarted service can adopt the party.
    tag: str = ""


@dataclass(frozen=True, slots=True)
class CancelParty:
    """Hang up a party's leg (ringing or answered); already gone is fine."""

    leg_id: str


@dataclass(frozen=True, slots=True)
class BridgeParty:
    """Put an answered leg into the call bridge, muted (listen-only) or not.
    Muting is the channel's own ``in`` direction, set before it joins."""

    call_id: str
    leg_id: str
    muted: bool
    role: str = ""  # kept on the leg (SIAGA_ROLE) for adoption after a restart


@dataclass(frozen=True, slots=True)
class SetMuted:
    leg_id: str
    muted: bool
    role: str = ""  # the new role, kept on the leg (SIAGA_ROLE)


@dataclass(frozen=True, slots=True)
class SnoopParty:
    """Create a private bridge ``snoop_id`` holding ``leg_id``, then a snoop
    channel ``snoop_id`` on ``target`` (its StasisStart: ``SnoopReady``)."""

    call_id: str
    leg_id: str
    snoop_id: str
    target: str  # the channel spied on
    spy: Direction
    whisper: Direction
    role: str = ""  # kept on the leg (SIAGA_ROLE) for adoption after a restart


@dataclass(frozen=True, slots=True)
class BridgeSnoop:
    """The snoop channel is ready: add it to its private bridge."""

    snoop_id: str


@dataclass(frozen=True, slots=True)
class DropSnoop:
    """Hang up the snoop channel and destroy its private bridge."""

    snoop_id: str


@dataclass(frozen=True, slots=True)
class PlayTone:
    """A short tone to the whole call bridge (``channel_id`` empty) or to one channel."""

    call_id: str
    tone: Tone
    playback_id: str
    channel_id: str = ""


@dataclass(frozen=True, slots=True)
class HandOverCall:
    """Tell the distribution core the taker handed the call over
    (``TakerHandedOver``): it releases the taker's handset and frees the taker."""

    call_id: str


@dataclass(frozen=True, slots=True)
class ReturnCall:
    """A handed-over call has nobody left talking with the caller: give it
    back to the distribution core, which queues the caller again (in order of
    their original arrival) and rings a call taker. ``offers_made``: attempt
    numbers already used for this call."""

    call_id: str
    offers_made: int


@dataclass(frozen=True, slots=True)
class EndConference:
    """A handed-over call is over: hang up the caller if still there and
    destroy the call bridge (the distribution core no longer owns it)."""

    call_id: str


ConferenceCommand = Union[  # noqa: UP007 - same shape as the distribution core's contract
    RingParty,
    CancelParty,
    BridgeParty,
    SetMuted,
    SnoopParty,
    BridgeSnoop,
    DropSnoop,
    PlayTone,
    HandOverCall,
    ReturnCall,
    EndConference,
]
CONFERENCE_COMMANDS = (
    RingParty,
    CancelParty,
    BridgeParty,
    SetMuted,
    SnoopParty,
    BridgeSnoop,
    DropSnoop,
    PlayTone,
    HandOverCall,
    ReturnCall,
    EndConference,
)
Command = Union[ConferenceCommand, StartTimer, CancelTimer, PublishCallEvent]  # noqa: UP007
