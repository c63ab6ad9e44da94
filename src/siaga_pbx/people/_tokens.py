"""Personal API tokens: made here, kept hashed, found by their hash. Pure: time is input.

A token is ``siaga_pat_`` + 43 url-safe characters (256 random bits). Only
its SHA-256 is stored: for a secret this random a fast hash is right (there
is nothing to guess), and it lets a request be matched by one dictionary
lookup, with no slow hash on the event loop. The prefix tells a personal
token from a configuration token at a glance (and lets secret scanners spot
one pasted where it should not be).

The book is a copy of the live tokens in PostgreSQL (and in the local
cache), so authenticating a request never waits for the database. Last-used
times are kept in memory and written to PostgreSQL in batches
(``take_used``), not on every request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace

from ._models import ApiToken

__all__ = ["PREFIX", "TokenBook", "new_token", "token_hash"]

PREFIX = "siaga_pat_"


def new_token() -> tuple[str, bytes]:
    """A fresh token and its hash."""
    token = PREFIX + secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenBook:
    def __init__(self) -> None:
        self._by_hash: dict[bytes, ApiToken] = {}
        self._used: dict[str, float] = {}  # token_id -> last use not yet written

    def replace_all(self, tokens: list[ApiToken]) -> None:
        """Take a fresh copy from the database, keeping uses not yet written."""
        self._by_hash = {t.token_hash: t for t in tokens}

    def put(self, token: ApiToken) -> None:
        self._by_hash[token.token_hash] = token

    def remove(self, token_id: str) -> None:
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.token_id != token_id}

    def remove_user(self, user_id: str) -> None:
        self._by_hash = {h: t for h, t in self._by_hash.items() if t.user_id != user_id}

    def find(self, token: str, now: float) -> ApiToken | None:
        """The live token ``token`` names (its use noted), or None."""
        if not token.startswith(PREFIX):
            return None
        t = self._by_hash.get(token_hash(token))
        if t is None or not t.live(now):
            return None
        self._used[t.token_id] = now
        return t

    def of_user(self, user_id: str | None) -> list[ApiToken]:
        """The tokens of ``user_id`` (every user's for None), last uses merged in."""
        out = [t for t in self._by_hash.values() if user_id is None or t.user_id == user_id]
        return [
            replace(t, last_used_at=self._used[t.token_id]) if t.token_id in self._used else t
            for t in sorted(out, key=lambda t: t.created_at)
        ]

    def by_id(self, token_id: str) -> ApiToken | None:
        return next((t for t in self._by_hash.values() if t.token_id == token_id), None)

    def all(self) -> list[ApiToken]:
        return list(self._by_hash.values())

    def take_used(self) -> dict[str, float]:
        used, self._used = self._used, {}
        return used

    def give_back_used(self, used: dict[str, float]) -> None:
        """A batch that could not be written: keep it for the next try."""
        for token_id, at in used.items():
            self._used[token_id] = max(at, self._used.get(token_id, at))
