"""The call taker state machine, written as a table of data.

``TAKER_TRANSITIONS`` maps (current status, input) to the new status. One
small function, ``next_status``, looks a pair up; a pair that is missing is
an illegal move and raises ``LocalProtocolError`` naming both. The engine
checks *requests* (log in/out, pause, unpause) against the same table before
touching anything, and turns a missing pair into ``RemoteProtocolError``.

Inputs are the core's own vocabulary, not raw events: one event may feed
several inputs (a ring that times out is RING_MISSED and, at the miss limit,
PAUSE), and several events feed the same input (a ring timer and
``HandsetFailed(NO_ANSWER)`` are both RING_MISSED).

Things the table deliberately does *not* encode, because they are not
statuses:
- Device state (``reachable``/``in_use``) and ``blocked`` (after a busy or
  unreachable offer) only decide whether an AVAILABLE taker may be rung.
- A log-out or pause asked for during a call does not interrupt it: the table
  keeps ON_CALL, the engine records ``after_call`` and applies it when the
  call ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from ._commands import TakerStatus
from ._config import TakerConfig
from ._errors import LocalProtocolError


class TakerInput(StrEnum):
    # requests (from takers or admins)
    LOG_IN = "log_in"
    LOG_OUT = "log_out"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    # the core's own moves
    OFFER = "offer"  # we ring the handset
    ANSWER = "answer"  # the handset answered a live offer
    RING_MISSED = "ring_missed"  # no answer in time, or declined
    RING_FAILED = "ring_failed"  # busy / unreachable / originate failed
    RING_CANCELLED = "ring_cancelled"  # we withdrew the offer
    CALL_ENDED = "call_ended"  # either side of a connected call hung up
    CONNECT_FAILED = "connect_failed"  # the bridge could not be made
    WRAP_UP_DONE = "wrap_up_done"


_S = TakerStatus
_I = TakerInput

TAKER_TRANSITIONS: Final[Mapping[tuple[TakerStatus, TakerInput], TakerStatus]] = {
    # Logged out: the only way in is logging in. Logging out again is a no-op
    # (clients retry); pausing or unpausing a logged-out taker is refused.
    (_S.OFFLINE, _I.LOG_IN): _S.AVAILABLE,
    (_S.OFFLINE, _I.LOG_OUT): _S.OFFLINE,
    # Available: the only status in which a taker is rung.
    (_S.AVAILABLE, _I.LOG_IN): _S.AVAILABLE,
    (_S.AVAILABLE, _I.LOG_OUT): _S.OFFLINE,
    (_S.AVAILABLE, _I.PAUSE): _S.PAUSED,
    (_S.AVAILABLE, _I.UNPAUSE): _S.AVAILABLE,
    (_S.AVAILABLE, _I.OFFER): _S.RINGING,
    # Ringing: log-out and pause withdraw the offer (the caller moves on).
    (_S.RINGING, _I.LOG_IN): _S.RINGING,
    (_S.RINGING, _I.LOG_OUT): _S.OFFLINE,
    (_S.RINGING, _I.PAUSE): _S.PAUSED,
    (_S.RINGING, _I.UNPAUSE): _S.RINGING,
    (_S.RINGING, _I.ANSWER): _S.ON_CALL,
    (_S.RINGING, _I.RING_MISSED): _S.AVAILABLE,
    (_S.RINGING, _I.RING_FAILED): _S.AVAILABLE,
    (_S.RINGING, _I.RING_CANCELLED): _S.AVAILABLE,
    # On a call: nothing interrupts it. LOG_OUT/PAUSE are deferred (after_call).
    (_S.ON_CALL, _I.LOG_IN): _S.ON_CALL,
    (_S.ON_CALL, _I.LOG_OUT): _S.ON_CALL,
    (_S.ON_CALL, _I.PAUSE): _S.ON_CALL,
    (_S.ON_CALL, _I.UNPAUSE): _S.ON_CALL,
    (_S.ON_CALL, _I.CALL_ENDED): _S.WRAP_UP,
    (_S.ON_CALL, _I.CONNECT_FAILED): _S.AVAILABLE,
    # Wrap-up: paperwork after a call; log-out and pause end it early.
    (_S.WRAP_UP, _I.LOG_IN): _S.WRAP_UP,
    (_S.WRAP_UP, _I.LOG_OUT): _S.OFFLINE,
    (_S.WRAP_UP, _I.PAUSE): _S.PAUSED,
    (_S.WRAP_UP, _I.UNPAUSE): _S.WRAP_UP,
    (_S.WRAP_UP, _I.WRAP_UP_DONE): _S.AVAILABLE,
    # Paused: pausing again only changes the reason.
    (_S.PAUSED, _I.LOG_IN): _S.PAUSED,
    (_S.PAUSED, _I.LOG_OUT): _S.OFFLINE,
    (_S.PAUSED, _I.PAUSE): _S.PAUSED,
    (_S.PAUSED, _I.UNPAUSE): _S.AVAILABLE,
}


def next_status(status: TakerStatus, inp: TakerInput) -> TakerStatus:
    """Look up one transition; a missing pair is our own illegal move."""
    try:
        return TAKER_TRANSITIONS[(status, inp)]
    except KeyError:
        raise LocalProtocolError(
            f"taker transition {inp.value!r} is illegal in status {status.value!r}"
        ) from None


@dataclass(slots=True)
class Taker:
    """One configured call taker and what the core knows about them."""

    config: TakerConfig
    status: TakerStatus = TakerStatus.OFFLINE
    since: float | None = None  # when ``status`` was entered (None: at start-up)
    reason: str = ""  # pause reason, only while PAUSED
    calls_taken: int = 0
    misses: int = 0  # consecutive ring-no-answers; reset by an answer or unpause
    last_call_end: float = -math.inf  # for the leastrecent strategy
    reachable: bool = True  # assumed until device state says otherwise
    in_use: bool = False
    blocked: bool = False  # a busy/unreachable offer; cleared by device state or timer
    attempt_id: str | None = None  # the live offer or the connected call
    call_id: str | None = None
    after_call: tuple[TakerInput, str] | None = None  # deferred LOG_OUT / PAUSE
    removed: bool = False  # gone from the config: logged out after the call

    @property
    def taker_id(self) -> str:
        return self.config.taker_id

    @property
    def offerable(self) -> bool:
        """May be rung now: available, and the handset is free and reachable."""
        return (
            self.status is TakerStatus.AVAILABLE
            and self.reachable
            and not self.in_use
            and not self.blocked
            and not self.removed
        )

    def apply(self, inp: TakerInput, now: float, reason: str = "") -> None:
        """Move along the table; ``reason`` is kept only for PAUSED."""
        new = next_status(self.status, inp)
        if new is not self.status:
            self.since = now
        self.status = new
        if new is TakerStatus.PAUSED:
            self.reason = reason or self.reason
        else:
            self.reason = ""
