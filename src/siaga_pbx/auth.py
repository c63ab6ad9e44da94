"""The one authentication path of every HTTP route.

Today a request proves who it is with a bearer token from the configuration
(``http.tokens``: token -> role); the people issue replaces tokens with named
users. Until then every route, the service's own API, the conference API and
the incident API alike, asks ``authenticate`` / ``authorize`` here:

- the scheme is matched case-insensitively (RFC 9110: ``bearer`` is ``Bearer``);
- the token is compared with every known token in constant time
  (``hmac.compare_digest``, no early exit), so timing tells nothing;
- the caller is known by role and a token fingerprint (for audit entries);
  the token itself is never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiohttp import web

ROLES = frozenset({"admin", "supervisor", "taker", "ops"})


@dataclass(frozen=True, slots=True)
class Tokens:
    """The known bearer tokens and their roles (validated once, at start)."""

    pairs: tuple[tuple[bytes, str], ...]

    @classmethod
    def from_mapping(cls, tokens: Mapping[str, str]) -> Tokens:
        bad = {role for role in tokens.values() if role not in ROLES}
        if bad:
            raise ValueError(f"unknown roles {sorted(bad)}; known: {sorted(ROLES)}")
        if any(not t for t in tokens):
            raise ValueError("empty bearer token")
        return cls(tuple((t.encode(), role) for t, role in tokens.items()))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request. A configuration token has no user: ``user_id`` and
    ``username`` stay empty and ``who`` names the token by role and fingerprint."""

    role: str
    who: str  # "role:fingerprint" for a token; the username for a person
    user_id: str = ""
    username: str = ""
    display_name: str = ""


class AuthError(Exception):
    """The request is not authenticated (401) or not allowed (403)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


TOKENS: web.AppKey[Tokens] = web.AppKey("auth_tokens", Tokens)


def install(app: web.Application, tokens: Mapping[str, str]) -> None:
    """Give ``app`` its tokens (raises ``ValueError`` for an unknown role or an empty token)."""
    app[TOKENS] = Tokens.from_mapping(tokens)


def authenticate(request: web.Request) -> Caller:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "missing bearer token")
    given = token.encode()
    role = None
    for known, known_role in request.app[TOKENS].pairs:  # every one: no early exit
        if hmac.compare_digest(known, given):
            role = known_role
    if role is None:
        raise AuthError(401, "invalid bearer token")
    fingerprint = hashlib.sha256(given).hexdigest()[:12]
    return Caller(role, f"{role}:{fingerprint}")


def authorize(request: web.Request, roles: Iterable[str]) -> Caller:
    caller = authenticate(request)
    if caller.role not in roles:
        raise AuthError(403, f"role {caller.role!r} may not do this")
    return caller
