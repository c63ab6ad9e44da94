"""Users and API tokens in PostgreSQL (migration 0007).

Every write is one statement (or one transaction) and bumps ``version``; an
update names the version it was based on and changes nothing if the row has
moved on (``StaleVersion``), so two admins editing the same user cannot
silently overwrite each other. The pool is made on first use, so the service
starts while PostgreSQL is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import asyncpg

from ._models import ApiToken, User

__all__ = ["NoSuchUser", "StaleVersion", "UserStore", "UsernameTaken"]

_USER_COLUMNS = (
    "user_id::text AS user_id, username, display_name, roles, enabled, password_hash,"
    " taker_id, handset, agency, version"
)
_TOKEN_COLUMNS = (
    "token_id::text AS token_id, user_id::text AS user_id, name, token_hash, roles,"  # noqa: S105
    " created_at, created_by, expires_at, revoked_at, last_used_at"
)
# Only these may change through ``update``.
EDITABLE = frozenset(
    {"display_name", "roles", "enabled", "password_hash", "taker_id", "handset", "agency"}
)


class NoSuchUser(LookupError):
    pass


class StaleVersion(Exception):
    def __init__(self, current: int) -> None:
        super().__init__(f"the user has changed since version was read (now {current})")
        self.current = current


class UsernameTaken(Exception):
    pass


def _ts(value: dt.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _at(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def user_of(r: asyncpg.Record) -> User:
    return User(
        user_id=r["user_id"],
        username=r["username"],
        display_name=r["display_name"],
        roles=tuple(r["roles"]),
        enabled=r["enabled"],
        password_hash=r["password_hash"],
        taker_id=r["taker_id"],
        handset=r["handset"],
        agency=r["agency"],
        version=r["version"],
    )


def token_of(r: asyncpg.Record) -> ApiToken:
    return ApiToken(
        token_id=r["token_id"],
        user_id=r["user_id"],
        name=r["name"],
        token_hash=bytes(r["token_hash"]),
        roles=tuple(r["roles"]),
        created_at=r["created_at"].timestamp(),
        created_by=r["created_by"],
        expires_at=_ts(r["expires_at"]),
        revoked_at=_ts(r["revoked_at"]),
        last_used_at=_ts(r["last_used_at"]),
    )


class UserStore:
    def __init__(self, dsn: str, *, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=3,
                        timeout=self._timeout_s,
                        command_timeout=self._timeout_s,
                    )
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # ---- reads ---------------------------------------------------------------

    async def everything(self) -> tuple[list[User], list[ApiToken]]:
        """Every user and every live token, read in one snapshot."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            users = await conn.fetch(f"SELECT {_USER_COLUMNS} FROM users")  # noqa: S608
            tokens = await conn.fetch(
                f"SELECT {_TOKEN_COLUMNS} FROM api_tokens"  # noqa: S608 - constant columns
                " WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())"
            )
        return [user_of(r) for r in users], [token_of(r) for r in tokens]

    async def count(self) -> int:
        return int(await (await self.pool()).fetchval("SELECT count(*) FROM users"))

    async def user(self, username: str) -> User | None:
        r = await (await self.pool()).fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = $1",  # noqa: S608
            username,
        )
        return None if r is None else user_of(r)

    async def tokens(self, user_id: str | None) -> list[ApiToken]:
        """Every token of ``user_id`` (of everyone for None), revoked ones too."""
        rows = await (await self.pool()).fetch(
            f"SELECT {_TOKEN_COLUMNS} FROM api_tokens"  # noqa: S608 - constant columns
            " WHERE $1::uuid IS NULL OR user_id = $1::uuid ORDER BY created_at, token_id",
            user_id,
        )
        return [token_of(r) for r in rows]

    # ---- writes --------------------------------------------------------------

    async def create(self, user: User) -> User:
        """Insert ``user`` (its ``user_id`` and ``version`` are the database's)."""
        try:
            r = await (await self.pool()).fetchrow(
                "INSERT INTO users (username, display_name, roles, enabled, password_hash,"  # noqa: S608
                " taker_id, handset, agency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                f" RETURNING {_USER_COLUMNS}",
                user.username,
                user.display_name,
                list(user.roles),
                user.enabled,
                user.password_hash,
                user.taker_id,
                user.handset,
                user.agency,
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTaken(user.username) from None
        assert r is not None
        return user_of(r)

    async def create_many(self, users: list[User]) -> int:
        """Insert ``users`` if the table is still empty (the lab seed); how many went in."""
        pool = await self.pool()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE users IN EXCLUSIVE MODE")
            if await conn.fetchval("SELECT count(*) FROM users"):
                return 0
            await conn.executemany(
                "INSERT INTO users (username, display_name, roles, enabled, password_hash,"
                " taker_id, handset, agency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [
                    (
                        u.username,
                        u.display_name,
                        list(u.roles),
                        u.enabled,
                        u.password_hash,
                        u.taker_id,
                        u.handset,
                        u.agency,
                    )
                    for u in users
                ],
            )
        return len(users)

    async def update(self, username: str, version: int, changes: Mapping[str, Any]) -> User:
        """Apply ``changes`` if the user is still at ``version``; the new row."""
        bad = set(changes) - EDITABLE
        if bad:
            raise ValueError(f"not editable: {sorted(bad)}")
        names = sorted(changes)
        sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=3))
        values = [list(v) if n == "roles" else v for n, v in ((n, changes[n]) for n in names)]
        pool = await self.pool()
        r = await pool.fetchrow(
            f"UPDATE users SET {sets}{', ' if sets else ''}"  # noqa: S608 - names from EDITABLE
            " version = version + 1, updated_at = now()"
            f" WHERE username = $1 AND version = $2 RETURNING {_USER_COLUMNS}",
            username,
            version,
            *values,
        )
        if r is not None:
            return user_of(r)
        current = await pool.fetchval("SELECT version FROM users WHERE username = $1", username)
        if current is None:
            raise NoSuchUser(username)
        raise StaleVersion(int(current))

    async def add_token(self, token: ApiToken) -> ApiToken:
        r = await (await self.pool()).fetchrow(
            "INSERT INTO api_tokens (user_id, name, token_hash, roles, created_by, expires_at)"  # noqa: S608
            " VALUES ($1::uuid, $2, $3, $4, $5, $6)"
            f" RETURNING {_TOKEN_COLUMNS}",
            token.user_id,
            token.name,
            token.token_hash,
            list(token.roles),
            token.created_by,
            _at(token.expires_at),
        )
        assert r is not None
        return token_of(r)

    async def revoke_token(self, token_id: str) -> ApiToken | None:
        """Revoke the token (once: a second revoke changes nothing); None if unknown."""
        pool = await self.pool()
        r = await pool.fetchrow(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())"  # noqa: S608
            f" WHERE token_id = $1::uuid RETURNING {_TOKEN_COLUMNS}",
            token_id,
        )
        return None if r is None else token_of(r)

    async def revoke_user_tokens(self, user_id: str) -> None:
        await (await self.pool()).execute(
            "UPDATE api_tokens SET revoked_at = now()"
            " WHERE user_id = $1::uuid AND revoked_at IS NULL",
            user_id,
        )

    async def record_uses(self, used: Mapping[str, float]) -> None:
        """Write a batch of last-used times (never moving one backwards)."""
        if not used:
            return
        ids = list(used)
        await (await self.pool()).execute(
            "UPDATE api_tokens t SET last_used_at = to_timestamp(u.at)"
            " FROM unnest($1::uuid[], $2::float8[]) AS u(id, at)"
            " WHERE t.token_id = u.id"
            "   AND (t.last_used_at IS NULL OR t.last_used_at < to_timestamp(u.at))",
            ids,
            [used[i] for i in ids],
        )
