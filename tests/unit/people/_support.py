"""A People directory that works offline: users come from a local state file
written beforehand, PostgreSQL is a closed port, time is a hand-turned clock."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher

from siaga_pbx.people import Passwords, People, PeopleSettings, User
from siaga_pbx.people._local import LocalState

# Cheap parameters: the tests check behaviour, not argon2's cost.
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class Clock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def closed_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"


def user(username: str, password: str, *roles: str, **extra: str | bool) -> User:
    return User(
        user_id=f"00000000-0000-0000-0000-{abs(hash(username)) % 10**12:012d}",
        username=username,
        display_name=username.title(),
        roles=roles,
        enabled=bool(extra.pop("enabled", True)),
        password_hash=FAST.hash(password),
        **extra,  # type: ignore[arg-type]
    )


USERS = [
    user("admin", "admin-pass", "admin"),
    user("sup", "sup-pass-1", "supervisor"),
    user("taker1", "taker1-pass", "call_taker", taker_id="taker1", handset="PJSIP/taker1"),
    user("taker2", "taker2-pass", "call_taker", taker_id="taker2"),
    user("ops", "ops-pass-1", "ops"),
    user("gone", "gone-pass-1", "supervisor", enabled=False),
]


async def write_local(path: Path, users: list[User]) -> None:
    local = LocalState(path)
    await local.open()
    await local.replace_directory(users, [])
    await local.close()


async def offline_people(
    path: Path, clock: Clock, settings: PeopleSettings | None = None, **kw: object
) -> People:
    """An opened People over ``path`` (written with USERS if new), PostgreSQL down."""
    if not path.exists():  # noqa: ASYNC240 - a test fixture, before the loop matters
        await write_local(path, USERS)
    people = People(
        settings or PeopleSettings(refresh_s=3600),
        dsn=closed_dsn(),
        state_path=path,
        profile="lab",
        clock=clock,
        passwords=Passwords(FAST),
        **kw,  # type: ignore[arg-type]
    )
    people.database_up = False  # known down: sign-in does not wait for it
    await people.open()
    return people
