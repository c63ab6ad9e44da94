"""Sign-in throttling per username and per source address. Pure: time is input.

Each key (a username, or a source address) keeps the times of its recent
failures. ``max_failures`` failures within ``window_s`` lock the key for
``lock_s``; while locked, sign-in is refused without checking the password
(so a locked account cannot be probed), with the seconds left for a
``Retry-After``. A success clears the username's failures but not the
address's: one valid account must not reset the count of an address that is
guessing other people's passwords.

The address limit is higher than the user limit by default: a centre's
workstations often share one NAT address, and a shift change is many
sign-ins from it. State is memory only (a restart forgets it; that costs an
attacker one restart per window, which they cannot trigger from outside).
Keys are pruned as they expire and their number is bounded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Limit", "Throttle"]

_MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Limit:
    max_failures: int
    window_s: float
    lock_s: float


class _Key:
    __slots__ = ("failures", "locked_until")

    def __init__(self) -> None:
        self.failures: deque[float] = deque()
        self.locked_until = 0.0


class Throttle:
    """Failure counts for one kind of key (``per_user`` or ``per_address``)."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self._keys: dict[str, _Key] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 if it may now."""
        k = self._keys.get(key)
        if k is None or k.locked_until <= now:
            return 0.0
        return k.locked_until - now

    def failed(self, key: str, now: float) -> bool:
        """Count a failure; True if it locked ``key`` just now."""
        k = self._keys.get(key)
        if k is None:
            if len(self._keys) >= _MAX_KEYS:
                self.prune(now)
                if len(self._keys) >= _MAX_KEYS:  # still full: forget the oldest key
                    del self._keys[next(iter(self._keys))]
            k = self._keys[key] = _Key()
        self._expire(k, now)
        k.failures.append(now)
        if len(k.failures) >= self.limit.max_failures and k.locked_until <= now:
            k.locked_until = now + self.limit.lock_s
            k.failures.clear()
            return True
        return False

    def succeeded(self, key: str) -> None:
        self._keys.pop(key, None)

    def prune(self, now: float) -> None:
        """Forget keys with no recent failure and no lock."""
        for key in list(self._keys):
            k = self._keys[key]
            self._expire(k, now)
            if not k.failures and k.locked_until <= now:
                del self._keys[key]

    def __len__(self) -> int:
        return len(self._keys)

    def _expire(self, k: _Key, now: float) -> None:
        while k.failures and k.failures[0] <= now - self.limit.window_s:
            k.failures.popleft()
