"""Who the people of a centre are: users, their roles, their API tokens.

Plain frozen dataclasses that check their own fields; the PostgreSQL table
(migration 0007) enforces the same rules, so a row written by hand with
``psql`` cannot hold what the API would refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ROLES",
    "ApiToken",
    "InvalidUser",
    "User",
    "check_user",
]

# In the order that names a person's primary role when they hold several.
ROLES = ("admin", "supervisor", "call_taker", "dispatcher", "ops")

USERNAME = re.compile(r"^[a-z][a-z0-9._-]{1,63}$")
TAKER_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HANDSET = re.compile(r"^PJSIP/[A-Za-z0-9._-]{1,64}$")
AGENCY = re.compile(r"^[a-z0-9_-]{1,32}$")


class InvalidUser(ValueError):
    """A user's fields break a rule; ``field`` names the one at fault."""

    def __init__(self, field_: str, message: str) -> None:
        super().__init__(f"{field_}: {message}")
        self.field = field_
        self.message = message


def check_user(
    *,
    username: str,
    display_name: str,
    roles: tuple[str, ...],
    taker_id: str | None,
    handset: str | None,
    agency: str | None,
) -> None:
    """Raise ``InvalidUser`` unless the fields describe a valid user."""
    if not USERNAME.match(username):
        raise InvalidUser("username", "2-64 characters: a-z first, then a-z 0-9 . _ -")
    if not display_name.strip() or len(display_name) > 128 or not display_name.isprintable():
        raise InvalidUser("display_name", "1-128 printable characters")
    if not roles:
        raise InvalidUser("roles", "at least one role")
    if len(set(roles)) != len(roles):
        raise InvalidUser("roles", "a role appears twice")
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise InvalidUser("roles", f"unknown roles {unknown}; known: {list(ROLES)}")
    taker = "call_taker" in roles
    if taker and not taker_id:
        raise InvalidUser("taker_id", "a call taker needs the taker id they work as")
    if not taker and (taker_id or handset):
        raise InvalidUser("taker_id", "only a call taker has a taker id and a handset")
    if taker_id is not None and not TAKER_ID.match(taker_id):
        raise InvalidUser("taker_id", "1-64 characters: A-Z a-z 0-9 . _ -")
    if handset is not None and not HANDSET.match(handset):
        raise InvalidUser("handset", "PJSIP/<endpoint>")
    dispatcher = "dispatcher" in roles
    if dispatcher and not agency:
        raise InvalidUser("agency", "a dispatcher needs the agency code they work for")
    if not dispatcher and agency:
        raise InvalidUser("agency", "only a dispatcher works for an agency")
    if agency is not None and not AGENCY.match(agency):
        raise InvalidUser("agency", "an agency code: a-z 0-9 _ -")


def primary_role(roles: tuple[str, ...]) -> str:
    """The most privileged of ``roles`` (the order of ``ROLES``)."""
    return min(roles, key=ROLES.index)


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str
    display_name: str
    roles: tuple[str, ...]
    enabled: bool
    password_hash: str = field(repr=False)
    taker_id: str | None = None
    handset: str | None = None
    agency: str | None = None
    version: int = 1

    def __post_init__(self) -> None:
        check_user(
            username=self.username,
            display_name=self.display_name,
            roles=self.roles,
            taker_id=self.taker_id,
            handset=self.handset,
            agency=self.agency,
        )

    @property
    def role(self) -> str:
        return primary_role(self.roles)

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the password hash."""
        return {
            "user_id": self.user_id,
            "username": self.username,
            "display_name": self.display_name,
            "roles": list(self.roles),
            "enabled": self.enabled,
            "taker_id": self.taker_id,
            "handset": self.handset,
            "agency": self.agency,
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A personal API token; only the SHA-256 of the secret is kept."""

    token_id: str
    user_id: str
    name: str
    token_hash: bytes = field(repr=False)
    roles: tuple[str, ...]  # empty: all of the owner's roles
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self, username: str) -> dict[str, Any]:
        return {
            "id": self.token_id,
            "username": username,
            "name": self.name,
            "roles": list(self.roles),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }
