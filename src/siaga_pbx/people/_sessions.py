"""Browser sessions: an in-memory book, kept on disk by ``_local``. Pure: time is input.

A session is named by a 256-bit random secret that lives only in the
browser's cookie; the book keeps its SHA-256 (a stolen state file holds no
usable cookie). A session ends when it has been idle for ``idle_s``, when it
is ``absolute_s`` old whatever its use, on sign-out, or when its user is
disabled or removed (checked by the caller on every request).

The CSRF token of a session is derived from its secret
(``SHA-256("csrf:" + secret)``): the server recomputes it from the cookie of
each request, so nothing more is stored, and it cannot be recovered from
the stored hash. A state-changing request made with the cookie must carry it
in ``X-CSRF-Token``; a page from another site can send the cookie (not with
SameSite=Strict, but defence in depth) but never read the token.

``touch`` updates ``last_seen`` in memory only and marks the session dirty;
the owner writes dirty sessions in batches. Losing a batch in a crash makes
a session look idle for longer, never shorter: it errs towards ending it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["Session", "SessionBook", "csrf_token", "session_key"]


def session_key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def csrf_token(secret: str) -> str:
    return hashlib.sha256(b"csrf:" + secret.encode()).hexdigest()


def csrf_matches(secret: str, given: str) -> bool:
    return hmac.compare_digest(csrf_token(secret).encode(), given.encode())


@dataclass(slots=True)
class Session:
    key: bytes  # SHA-256 of the secret
    user_id: str
    created_at: float
    last_seen: float

    def expires_at(self, idle_s: float, absolute_s: float) -> float:
        return min(self.last_seen + idle_s, self.created_at + absolute_s)


class SessionBook:
    def __init__(self, *, idle_s: float, absolute_s: float) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._sessions: dict[bytes, Session] = {}
        self._dirty: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def load(self, sessions: list[Session], now: float) -> list[bytes]:
        """Take the sessions read back from disk; return the keys of expired ones."""
        gone = []
        for s in sessions:
            if self._alive(s, now):
                self._sessions[s.key] = s
            else:
                gone.append(s.key)
        return gone

    def open(self, user_id: str, now: float) -> tuple[str, Session]:
        """A new session for ``user_id``: its secret (for the cookie) and the session."""
        secret = secrets.token_urlsafe(32)
        session = Session(session_key(secret), user_id, now, now)
        self._sessions[session.key] = session
        return secret, session

    def find(self, secret: str, now: float) -> Session | None:
        """The live session of ``secret``, touched; None if unknown or expired
        (an expired one is dropped here and reported by ``expired``)."""
        key = session_key(secret)
        s = self._sessions.get(key)
        if s is None:
            return None
        if not self._alive(s, now):
            self._drop(key)
            return None
        s.last_seen = now
        self._dirty.add(key)
        return s

    def close(self, secret: str) -> Session | None:
        key = session_key(secret)
        s = self._sessions.get(key)
        if s is not None:
            self._drop(key)
        return s

    def close_user(self, user_id: str) -> int:
        keys = [k for k, s in self._sessions.items() if s.user_id == user_id]
        for k in keys:
            self._drop(k)
        return len(keys)

    def user_ids(self) -> set[str]:
        return {s.user_id for s in self._sessions.values()}

    def sweep(self, now: float) -> list[bytes]:
        """Drop expired sessions; return their keys."""
        keys = [k for k, s in self._sessions.items() if not self._alive(s, now)]
        for k in keys:
            self._drop(k)
        return keys

    def take_changes(self) -> tuple[list[Session], list[bytes]]:
        """Sessions touched since the last call, and keys closed since then."""
        live = [self._sessions[k] for k in self._dirty if k in self._sessions]
        gone = [k for k in self._dirty if k not in self._sessions]
        self._dirty.clear()
        return live, gone

    def expires_at(self, s: Session) -> float:
        return s.expires_at(self.idle_s, self.absolute_s)

    def _alive(self, s: Session, now: float) -> bool:
        return now < s.expires_at(self.idle_s, self.absolute_s)

    def _drop(self, key: bytes) -> None:
        del self._sessions[key]
        self._dirty.add(key)
