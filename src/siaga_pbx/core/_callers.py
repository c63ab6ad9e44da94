"""Callers as the core tracks them, their service order, and derived ids.

Service order is ``(band, priority, seq)``, lowest first:
- ``band`` is 0 for a caller whose taker left mid-call and who was put back
  at the head of the queue, 1 for everyone else;
- ``priority``: lower number first (see ``PriorityRules``);
- ``seq``: arrival order (for band 0: order of going back to the head).
A caller who overflows to another queue keeps all three, so they keep their
place by arrival time there.

All Asterisk-facing ids derive from the call id and are built in
``siaga_pbx.ids``, so that creating them again is harmless and they can be
found after a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ._commands import HoldMode
from ._events import CallerIdentity


class CallerState(StrEnum):
    WAITING = "waiting"  # no live offer
    RINGING = "ringing"  # one or more handsets are ringing for this caller
    CONNECTED = "connected"  # bridged with a taker


HEAD_BAND = 0
NORMAL_BAND = 1


@dataclass(slots=True)
class Caller:
    call_id: str
    identity: CallerIdentity
    queue: str
    arrived_at: float  # when the call reached the system; kept across overflow
    queued_at: float  # when it entered its current queue (overflow after_s counts from here)
    priority: int
    seq: int
    band: int = NORMAL_BAND
    offers: dict[str, str] = field(default_factory=dict)  # live attempt id -> taker id
    offer_count: int = 0  # attempt ids are numbered per call
    tried: set[str] = field(default_factory=set)  # takers who missed in this round
    not_before: float = 0.0  # retry delay after a missed round
    playing: tuple[str, str] | None = None  # (playback id, prompt) now playing
    prompt_queue: list[str] = field(default_factory=list)  # prompts still to play
    prompt_count: int = 0
    hold: tuple[HoldMode, str] | None = None  # (mode, music class) while on hold
    visited: set[str] = field(default_factory=set)  # queues, against overflow loops
    overflow_due: bool = False  # overflow time passed while ringing: overflow after
    attempt_id: str | None = None  # connected offer
    taker_id: str | None = None  # connected taker
    answered_at: float | None = None

    @property
    def state(self) -> CallerState:
        if self.attempt_id is not None:
            return CallerState.CONNECTED
        return CallerState.RINGING if self.offers else CallerState.WAITING

    @property
    def order_key(self) -> tuple[int, int, int]:
        return (self.band, self.priority, self.seq)
