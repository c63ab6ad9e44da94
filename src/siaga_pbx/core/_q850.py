"""The one Q.850 table: what a channel's hang-up cause means to us.

Both cores read causes through here (the conference core for its dispatcher
legs, the distribution core through the translator for handset offers), so
an unanswered ring that ends with the same cause is the same failure
everywhere.

- ``NORMAL_CLEARING`` (16) after answer is a plain hang-up (BYE); any other
  cause after answer is a *drop* (network, handset failure, media timeout).
- Before answer: 17 busy; 18, 19, 31 and 16 no answer (16 before answer is a
  phone that ended the ring itself, as some do on their own ring timeout);
  21 rejected; everything else unreachable (the handset is not there).
"""

from __future__ import annotations

from typing import Final

from ._events import HandsetFailure

NORMAL_CLEARING: Final = 16

_RING_FAILURES: Final[dict[int, HandsetFailure]] = {
    16: HandsetFailure.NO_ANSWER,
    17: HandsetFailure.BUSY,
    18: HandsetFailure.NO_ANSWER,
    19: HandsetFailure.NO_ANSWER,
    21: HandsetFailure.REJECTED,
    31: HandsetFailure.NO_ANSWER,
}


def ring_failure(cause: int) -> HandsetFailure:
    """Why a ring that ended before answer failed, from its Q.850 cause."""
    return _RING_FAILURES.get(cause, HandsetFailure.UNREACHABLE)
