"""The local state file (SQLite under ``state_dir``): sessions, and a copy of the users.

Why a local copy of users and their argon2 hashes: a 112 centre cannot stop
when its database does. With this copy a person who signed in before (whose
row was read from PostgreSQL at least once) can still sign in while
PostgreSQL is down, and sessions (which live only here) survive a restart of
the service. The copy holds what PostgreSQL holds (argon2id hashes, SHA-256
of tokens), never a password or a token; it is written with mode 0600 and is
refreshed whenever PostgreSQL answers, so a user disabled there is disabled
here at the next refresh (and at once when disabled through this service).

Threading: like the outbox, one worker thread owns the connection and every
call runs there; the event loop only awaits.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ._models import ApiToken, User
from ._sessions import Session

__all__ = ["LocalState"]

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    key BLOB PRIMARY KEY, user_id TEXT NOT NULL, created_at REAL NOT NULL, last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (user_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token_hash BLOB PRIMARY KEY, body TEXT NOT NULL);
"""


def _user_json(u: User) -> str:
    return json.dumps({**u.public(), "password_hash": u.password_hash})


def _user_from(body: str) -> User:
    d = json.loads(body)
    return User(
        user_id=d["user_id"],
        username=d["username"],
        display_name=d["display_name"],
        roles=tuple(d["roles"]),
        enabled=d["enabled"],
        password_hash=d["password_hash"],
        taker_id=d["taker_id"],
        handset=d["handset"],
        agency=d["agency"],
        version=d["version"],
    )


def _token_json(t: ApiToken) -> str:
    return json.dumps({**t.public(""), "user_id": t.user_id})


def _token_from(token_hash: bytes, body: str) -> ApiToken:
    d = json.loads(body)
    return ApiToken(
        token_id=d["id"],
        user_id=d["user_id"],
        name=d["name"],
        token_hash=bytes(token_hash),
        roles=tuple(d["roles"]),
        created_at=d["created_at"],
        created_by=d["created_by"],
        expires_at=d["expires_at"],
        revoked_at=d["revoked_at"],
        last_used_at=d["last_used_at"],
    )


class LocalState:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="people-local")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> tuple[list[Session], list[User], list[ApiToken]]:
        """Open (create) the file; what it holds."""
        return await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._pool.shutdown(wait=True)

    async def put_session(self, s: Session) -> None:
        await self._run(self._put_sessions, [s], [])

    async def write_sessions(self, live: list[Session], gone: list[bytes]) -> None:
        if live or gone:
            await self._run(self._put_sessions, live, gone)

    async def replace_directory(self, users: list[User], tokens: list[ApiToken]) -> None:
        await self._run(self._replace_directory, users, tokens)

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # ---- on the worker thread -----------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "LocalState used before open()"
        return self._db

    def _open(self) -> tuple[list[Session], list[User], list[ApiToken]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)  # secrets-adjacent: owner only
        os.close(fd)
        os.chmod(self.path, 0o600)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._db = db
        sessions = [
            Session(bytes(k), u, c, s)
            for k, u, c, s in db.execute("SELECT key, user_id, created_at, last_seen FROM sessions")
        ]
        users = [_user_from(b) for (b,) in db.execute("SELECT body FROM users")]
        tokens = [_token_from(h, b) for h, b in db.execute("SELECT token_hash, body FROM tokens")]
        return sessions, users, tokens

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _put_sessions(self, live: list[Session], gone: list[bytes]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO sessions (key, user_id, created_at, last_seen) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET last_seen = excluded.last_seen",
                [(s.key, s.user_id, s.created_at, s.last_seen) for s in live],
            )
            db.executemany("DELETE FROM sessions WHERE key = ?", [(k,) for k in gone])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _replace_directory(self, users: list[User], tokens: list[ApiToken]) -> None:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM users")
            db.execute("DELETE FROM tokens")
            db.executemany(
                "INSERT INTO users (user_id, body) VALUES (?, ?)",
                [(u.user_id, _user_json(u)) for u in users],
            )
            db.executemany(
                "INSERT INTO tokens (token_hash, body) VALUES (?, ?)",
                [(t.token_hash, _token_json(t)) for t in tokens],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
