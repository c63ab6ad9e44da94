"""The one authentication path of every HTTP route.

A request proves who it is, in this order, with (docs/PEOPLE.md):

1. a session cookie (``siaga_session``) from ``POST /api/session``; a
   state-changing request made with it must also carry the session's CSRF
   token in ``X-CSRF-Token``;
2. a personal API token (``Authorization: Bearer siaga_pat_...``);
3. a bearer token from the configuration (``http.tokens``: token -> role),
   until those are removed.

Every route, the service's own API, the conference API and the incident API
alike, asks ``authenticate`` / ``authorize`` here. Both answer from memory
(``people.People`` keeps the users, sessions and tokens there), so asking
costs no I/O and twice costs little. For configuration tokens:

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
from dataclasses import dataclass, field

from aiohttp import web

from .people import ROLES as PERSON_ROLES
from .people import People, Person, csrf_matches

# The roles a configuration token may have ("taker" is the old name of "call_taker").
ROLES = frozenset({"admin", "supervisor", "taker", "ops"})
# The old role name that routes and configuration tokens still use.
_ALIASES = {"taker": "call_taker"}
SESSION_COOKIE = "siaga_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def canonical_role(role: str) -> str:
    return _ALIASES.get(role, role)


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
    ``username`` stay empty and ``who`` names the token by role and fingerprint.

    ``role`` is the primary role (a person's most privileged one; for a
    configuration token the role it was given, ``taker`` kept as it was);
    ``roles`` is every role in force, in the new names (``call_taker``)."""

    role: str
    who: str  # "role:fingerprint" for a token; the username for a person
    user_id: str = ""
    username: str = ""
    display_name: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    taker_id: str = ""  # the taker a call taker works as
    agency: str = ""  # the agency a dispatcher works for
    via: str = "config-token"  # or "session", "token"
    token_id: str = ""  # the personal token used, if one was


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
PEOPLE: web.AppKey[People] = web.AppKey("auth_people", People)


def install(app: web.Application, tokens: Mapping[str, str]) -> None:
    """Give ``app`` its tokens (raises ``ValueError`` for an unknown role or an empty token)."""
    app[TOKENS] = Tokens.from_mapping(tokens)


def install_people(app: web.Application, people: People) -> None:
    """Let ``app`` know named users: session cookies and personal tokens."""
    app[PEOPLE] = people


def authenticate(request: web.Request) -> Caller:
    """Who made ``request`` (memory only: no I/O), or ``AuthError``."""
    people = request.app.get(PEOPLE)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    bearer = scheme.lower() == "bearer" and bool(token)
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and people is not None:
        person = people.by_session(cookie)
        if person is not None:
            if request.method not in _SAFE_METHODS and not csrf_matches(
                cookie, request.headers.get(CSRF_HEADER, "")
            ):
                raise AuthError(403, f"missing or wrong {CSRF_HEADER} header for this session")
            return _person_caller(person)
        if not bearer:
            raise AuthError(401, "session expired or signed out; sign in again")
    if not bearer:
        raise AuthError(401, "missing bearer token")
    if people is not None:
        person = people.by_token(token)
        if person is not None:
            return _person_caller(person)
    given = token.encode()
    role = None
    for known, known_role in request.app[TOKENS].pairs:  # every one: no early exit
        if hmac.compare_digest(known, given):
            role = known_role
    if role is None:
        raise AuthError(401, "invalid bearer token")
    fingerprint = hashlib.sha256(given).hexdigest()[:12]
    return Caller(role, f"{role}:{fingerprint}", roles=frozenset({canonical_role(role)}))


def _person_caller(person: Person) -> Caller:
    user = person.user
    roles = person.roles
    return Caller(
        role=min(roles, key=PERSON_ROLES.index),
        who=user.username,
        user_id=user.user_id,
        username=user.username,
        display_name=user.display_name,
        roles=roles,
        taker_id=user.taker_id or "",
        agency=user.agency or "",
        via=person.via,
        token_id=person.token_id,
    )


def authorize(request: web.Request, roles: Iterable[str]) -> Caller:
    """The caller, if they hold one of ``roles`` (old names such as ``taker`` accepted)."""
    caller = authenticate(request)
    if not caller.roles & {canonical_role(r) for r in roles}:
        raise AuthError(403, f"role {caller.role!r} may not do this")
    return caller
