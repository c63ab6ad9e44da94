"""The people directory of a running service: who may sign in, who a request is.

Theory of operation
-------------------
PostgreSQL holds the users and their tokens; this object holds a copy in
memory, backed by the local state file (``_local``), and answers every
question a request asks (``by_session``, ``by_token``) from memory, with no
I/O: an HTTP request never waits for the database, and neither does the
call path that shares the event loop. The copy is refreshed from PostgreSQL
every ``refresh_s`` and whenever someone unknown tries to sign in; writes
made through this service (users, tokens) go to PostgreSQL first and then
to the copy at once.

Sessions live only here (memory + the state file): with PostgreSQL down,
people who are signed in keep working, and people who signed in before can
sign in again against the cached argon2 hash. Writes that must reach
PostgreSQL (a new user, a new or revoked token) fail with
``DirectoryUnavailable`` (503) while it is down rather than diverge from it.

Sign-in: throttle check (per username, per address) -> argon2 verify on the
password threads -> a new session written to the state file before the
cookie is handed out (so it survives a restart). Every outcome is logged and
passed to ``on_sign_in`` (the audit's hook); passwords and secrets never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import asyncpg
import structlog

from ._local import LocalState
from ._models import ApiToken, User, check_user
from ._passwords import Busy, Passwords, check_policy
from ._seed import LAB_USERS
from ._sessions import SessionBook, csrf_token
from ._settings import PeopleSettings
from ._store import NoSuchUser, UserStore
from ._throttle import Limit, Throttle
from ._tokens import TokenBook, new_token

__all__ = [
    "DirectoryUnavailable",
    "People",
    "Person",
    "SignInEvent",
    "SignInRefused",
    "SignedIn",
]

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

_DB_DOWN = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.UndefinedTableError,  # not migrated yet
)
_UNKNOWN_REFRESH_S = 3.0  # a sign-in by someone not in the copy waits at most this for it
_UNKNOWN_REFRESH_EVERY_S = 5.0


class DirectoryUnavailable(Exception):
    """PostgreSQL cannot be reached, and this change must be made there."""


@dataclass(frozen=True, slots=True)
class Person:
    """A signed-in user or the owner of a personal token, with the roles in force."""

    user: User
    roles: frozenset[str]
    via: Literal["session", "token"]
    token_id: str = ""


@dataclass(frozen=True, slots=True)
class SignedIn:
    secret: str  # the cookie value: shown to the browser once, kept only hashed
    csrf_token: str
    user: User
    expires_at: float


@dataclass(frozen=True, slots=True)
class SignInEvent:
    """One sign-in outcome, for the log and the audit (no secret in it)."""

    outcome: Literal["signed_in", "failed", "locked_out", "refused_locked", "signed_out"]
    username: str
    source: str
    at: float
    user_id: str = ""
    reason: str = ""
    retry_after_s: float = 0.0


class SignInRefused(Exception):
    def __init__(self, status: int, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after_s = retry_after_s


def log_sign_in(event: SignInEvent) -> None:
    """The default ``on_sign_in``: nothing beyond the log ``People`` writes anyway."""


class People:
    def __init__(
        self,
        settings: PeopleSettings,
        *,
        dsn: str,
        state_path: Path,
        profile: str,
        clock: Callable[[], float] = time.time,
        passwords: Passwords | None = None,
        on_sign_in: Callable[[SignInEvent], None] = log_sign_in,
    ) -> None:
        self.settings = settings
        self.profile = profile
        self.seed_lab = (
            settings.seed_lab_users if settings.seed_lab_users is not None else profile == "lab"
        )
        if self.seed_lab and profile != "lab":
            raise ValueError("the lab users are seeded only in the lab profile")
        self.cookie_secure = (
            settings.cookie_secure if settings.cookie_secure is not None else profile != "lab"
        )
        self.clock = clock
        self.on_sign_in = on_sign_in
        self.passwords = passwords or Passwords()
        self.store = UserStore(dsn)
        self.local = LocalState(state_path)
        self.sessions = SessionBook(
            idle_s=settings.session_idle_s, absolute_s=settings.session_absolute_s
        )
        self.tokens = TokenBook()
        self.per_user = Throttle(
            Limit(settings.failures_per_user, settings.throttle_window_s, settings.throttle_lock_s)
        )
        self.per_address = Throttle(
            Limit(
                settings.failures_per_address, settings.throttle_window_s, settings.throttle_lock_s
            )
        )
        self._by_id: dict[str, User] = {}
        self._by_name: dict[str, User] = {}
        self._refreshing: asyncio.Task[bool] | None = None
        self.database_up: bool | None = None  # None: not asked yet
        self.refreshed_at: float | None = None
        self._closed = False

    def __repr__(self) -> str:
        return (
            f"<People users={len(self._by_id)} sessions={len(self.sessions)}"
            f" database_up={self.database_up}>"
        )

    # ---- life cycle -------------------------------------------------------------

    async def open(self) -> None:
        """Read the state file (sessions and the copy of the users)."""
        sessions, users, tokens = await self.local.open()
        self._set_users(users)
        self.tokens.replace_all(tokens)
        gone = self.sessions.load(sessions, self.clock())
        await self.local.write_sessions([], gone)
        log.info("people.opened", users=len(users), sessions=len(self.sessions))

    async def run(self) -> None:
        """Refresh from PostgreSQL and write batched state, until cancelled."""
        next_refresh = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_refresh:
                    next_refresh = now + self.settings.refresh_s
                    await self.refresh()
                await self.flush()
            except Exception as exc:  # noqa: BLE001 - keep serving from memory; retried
                log.error("people.background_failed", error=repr(exc)[:300])  # noqa: TRY400
            await asyncio.sleep(min(self.settings.flush_s, self.settings.refresh_s))

    async def close(self) -> None:
        """Write what is pending and let go of the files (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), timeout=3.0)
        await self.local.close()
        await self.store.close()
        self.passwords.close()

    async def flush(self) -> None:
        """Write touched sessions to the state file and token uses to PostgreSQL."""
        now = self.clock()
        self.sessions.sweep(now)
        self.per_user.prune(now)
        self.per_address.prune(now)
        live, gone = self.sessions.take_changes()
        await self.local.write_sessions(live, gone)
        used = self.tokens.take_used()
        if used:
            try:
                await self.store.record_uses(used)
            except _DB_DOWN:
                self.tokens.give_back_used(used)

    async def refresh(self) -> bool:
        """Take a fresh copy of the users from PostgreSQL (seeding the lab's
        into an empty table); False if it could not be read."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh())
        return await asyncio.shield(self._refreshing)

    async def _refresh(self) -> bool:
        try:
            users, tokens = await self.store.everything()
            if not users and self.seed_lab:
                await self._seed()
                users, tokens = await self.store.everything()
        except _DB_DOWN as exc:
            if self.database_up is not False:
                log.warning("people.database_unreachable", error=repr(exc)[:200])
            self.database_up = False
            return False
        if self.database_up is False:
            log.info("people.database_back")
        self.database_up = True
        self.refreshed_at = self.clock()
        self._set_users(users)
        self.tokens.replace_all(tokens)
        await self.local.replace_directory(users, tokens)
        return True

    async def _seed(self) -> None:
        users = [
            User(
                user_id="",
                username=u.username,
                display_name=u.display_name,
                roles=u.roles,
                enabled=True,
                password_hash=await self.passwords.hash(u.password),
                taker_id=u.taker_id,
                handset=u.handset,
                agency=u.agency,
            )
            for u in LAB_USERS
        ]
        added = await self.store.create_many(users)
        if added:
            log.warning(
                "people.lab_users_seeded",
                users=[u.username for u in users],
                hint="the lab profile's documented users (README); never in production",
            )

    def _set_users(self, users: list[User]) -> None:
        self._by_id = {u.user_id: u for u in users}
        self._by_name = {u.username: u for u in users}
        for user_id in self.sessions.user_ids():
            u = self._by_id.get(user_id)
            if u is None or not u.enabled:
                self.sessions.close_user(user_id)

    def _put_user(self, user: User) -> None:
        self._by_id[user.user_id] = user
        self._by_name[user.username] = user

    async def _save_copy(self) -> None:
        await self.local.replace_directory(list(self._by_id.values()), self.tokens.all())

    # ---- who is this request (memory only) -------------------------------------

    def by_session(self, secret: str) -> Person | None:
        s = self.sessions.find(secret, self.clock())
        if s is None:
            return None
        user = self._by_id.get(s.user_id)
        if user is None or not user.enabled:
            self.sessions.close(secret)
            return None
        return Person(user, frozenset(user.roles), "session")

    def by_token(self, token: str) -> Person | None:
        t = self.tokens.find(token, self.clock())
        if t is None:
            return None
        user = self._by_id.get(t.user_id)
        if user is None or not user.enabled:
            return None
        roles = frozenset(user.roles) & frozenset(t.roles) if t.roles else frozenset(user.roles)
        if not roles:
            return None
        return Person(user, roles, "token", t.token_id)

    def session_expiry(self, secret: str) -> float | None:
        s = self.sessions.find(secret, self.clock())
        return None if s is None else self.sessions.expires_at(s)

    # ---- sign-in and sign-out -------------------------------------------------

    async def sign_in(self, username: str, password: str, source: str) -> SignedIn:
        """A new session, or ``SignInRefused`` (401 wrong, 429 locked, 503 busy)."""
        name = username.strip().lower()
        now = self.clock()
        wait = max(
            self.per_user.retry_after(f"u:{name}", now),
            self.per_address.retry_after(f"a:{source}", now),
        )
        if wait > 0:
            self._emit(SignInEvent("refused_locked", name, source, now, retry_after_s=wait))
            raise SignInRefused(
                429,
                f"too many failed sign-ins; try again in {int(wait) + 1} s"
                " (a supervisor or admin can help meanwhile)",
                wait,
            )
        user = self._by_name.get(name)
        if user is None and self._may_refresh_for_unknown(now):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.refresh(), _UNKNOWN_REFRESH_S)
            user = self._by_name.get(name)
        try:
            ok = await self.passwords.verify(user.password_hash if user else None, password)
        except Busy as exc:
            raise SignInRefused(503, str(exc), 5.0) from None
        now = self.clock()
        if not ok or user is None or not user.enabled:
            reason = (
                "unknown user"
                if user is None
                else ("wrong password" if not ok else "user disabled")
            )
            self._failed(name, source, now, reason, user)
            raise SignInRefused(401, "wrong username or password")
        self.per_user.succeeded(f"u:{name}")
        secret, session = self.sessions.open(user.user_id, now)
        await self.local.put_session(session)
        self._emit(SignInEvent("signed_in", name, source, now, user_id=user.user_id))
        return SignedIn(secret, csrf_token(secret), user, self.sessions.expires_at(session))

    def _may_refresh_for_unknown(self, now: float) -> bool:
        # Someone not in the copy may have been added by hand in PostgreSQL: look
        # again, but at most every few seconds, so unknown names cannot make the
        # service hammer the database (and never while it is known to be down).
        if self.database_up is False:
            return False
        return self.refreshed_at is None or now - self.refreshed_at >= _UNKNOWN_REFRESH_EVERY_S

    def _failed(self, name: str, source: str, now: float, reason: str, user: User | None) -> None:
        user_id = user.user_id if user else ""
        self._emit(SignInEvent("failed", name, source, now, user_id=user_id, reason=reason))
        for throttle, key, what in (
            (self.per_user, f"u:{name}", "username"),
            (self.per_address, f"a:{source}", "address"),
        ):
            if throttle.failed(key, now):
                self._emit(
                    SignInEvent(
                        "locked_out",
                        name,
                        source,
                        now,
                        user_id=user_id,
                        reason=f"too many failures for this {what}",
                        retry_after_s=throttle.limit.lock_s,
                    )
                )

    async def sign_out(self, secret: str, source: str) -> None:
        s = self.sessions.close(secret)
        if s is None:
            return
        await self.local.write_sessions([], [s.key])
        user = self._by_id.get(s.user_id)
        name = user.username if user else ""
        self._emit(SignInEvent("signed_out", name, source, self.clock(), user_id=s.user_id))

    def _emit(self, event: SignInEvent) -> None:
        fields: dict[str, Any] = {
            "username": event.username,
            "source": event.source,
            "user_id": event.user_id or None,
        }
        if event.reason:
            fields["reason"] = event.reason
        if event.retry_after_s:
            fields["retry_after_s"] = round(event.retry_after_s, 1)
        level = "info" if event.outcome in ("signed_in", "signed_out") else "warning"
        getattr(log, level)(f"people.{event.outcome}", **fields)
        try:
            self.on_sign_in(event)
        except Exception as exc:  # noqa: BLE001 - a failing hook must not fail a sign-in
            log.error("people.sign_in_hook_failed", error=repr(exc)[:200])  # noqa: TRY400

    # ---- users ----------------------------------------------------------------

    def users(self) -> list[User]:
        return sorted(self._by_id.values(), key=lambda u: u.username)

    def user(self, username: str) -> User | None:
        return self._by_name.get(username)

    def user_by_id(self, user_id: str) -> User | None:
        return self._by_id.get(user_id)

    async def create_user(self, fields: Mapping[str, Any], password: str) -> User:
        """``fields``: username, display_name, roles, enabled, taker_id, handset, agency.
        Raises ``InvalidUser``, ``PasswordPolicyError``, ``UsernameTaken``."""
        check_policy(password)
        draft = User(
            user_id="",
            password_hash="$argon2id$pending",  # noqa: S106 - replaced below
            enabled=bool(fields.get("enabled", True)),
            username=fields["username"],
            display_name=fields["display_name"],
            roles=tuple(fields["roles"]),
            taker_id=fields.get("taker_id"),
            handset=fields.get("handset"),
            agency=fields.get("agency"),
        )
        draft = replace(draft, password_hash=await self.passwords.hash(password))
        user = await self._db(self.store.create(draft))
        self._put_user(user)
        await self._save_copy()
        return user

    async def update_user(
        self, username: str, version: int, changes: Mapping[str, Any], password: str | None
    ) -> User:
        """Raises ``NoSuchUser``, ``StaleVersion``, ``InvalidUser``, ``PasswordPolicyError``."""
        current = self._by_name.get(username) or await self._db(self.store.user(username))
        if current is None:
            raise NoSuchUser(username)
        merged = {**current.public(), **changes}
        check_user(
            username=username,
            display_name=merged["display_name"],
            roles=tuple(merged["roles"]),
            taker_id=merged["taker_id"],
            handset=merged["handset"],
            agency=merged["agency"],
        )
        writes = dict(changes)
        if "roles" in writes:
            writes["roles"] = tuple(writes["roles"])
        if password is not None:
            check_policy(password)
            writes["password_hash"] = await self.passwords.hash(password)
        user = await self._db(self.store.update(username, version, writes))
        self._put_user(user)
        if not user.enabled or password is not None:
            # disabled: out at once; a new password: every old session ends
            ended = self.sessions.close_user(user.user_id)
            await self.flush()
            log.info("people.sessions_ended", username=username, sessions=ended)
        if not user.enabled:
            await self._db(self.store.revoke_user_tokens(user.user_id))
            self.tokens.remove_user(user.user_id)
        await self._save_copy()
        return user

    # ---- tokens ---------------------------------------------------------------

    async def create_token(
        self,
        owner: User,
        *,
        name: str,
        roles: tuple[str, ...],
        expires_at: float | None,
        created_by: str,
    ) -> tuple[str, ApiToken]:
        """A new token for ``owner``: the secret (shown once) and its record."""
        if set(roles) - set(owner.roles):
            raise ValueError(
                f"{owner.username} does not hold {sorted(set(roles) - set(owner.roles))}"
            )
        secret, digest = new_token()
        draft = ApiToken(
            token_id="",
            user_id=owner.user_id,
            name=name,
            token_hash=digest,
            roles=roles,
            created_at=self.clock(),
            created_by=created_by,
            expires_at=expires_at,
        )
        token = await self._db(self.store.add_token(draft))
        self.tokens.put(token)
        await self._save_copy()
        return secret, token

    async def revoke_token(self, token_id: str) -> ApiToken | None:
        token = await self._db(self.store.revoke_token(token_id))
        self.tokens.remove(token_id)
        await self._save_copy()
        return token

    async def all_tokens(self, user_id: str | None) -> list[ApiToken]:
        """Every token (revoked too) from PostgreSQL; the live ones from the copy if it is down."""
        try:
            stored = await self.store.tokens(user_id)
        except _DB_DOWN:
            return self.tokens.of_user(user_id)
        mine = {t.token_id: t for t in self.tokens.of_user(user_id)}
        out = []
        for row in stored:
            seen = mine[row.token_id].last_used_at if row.token_id in mine else None
            if seen is not None and (row.last_used_at is None or seen > row.last_used_at):
                row = replace(row, last_used_at=seen)  # noqa: PLW2901
            out.append(row)
        return out

    async def _db(self, aw: Awaitable[_T]) -> _T:
        try:
            return await aw
        except _DB_DOWN as exc:
            raise DirectoryUnavailable("the user directory (PostgreSQL) is unreachable") from exc
