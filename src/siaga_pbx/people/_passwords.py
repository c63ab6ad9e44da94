"""Password hashing: argon2id (argon2-cffi), off the event loop.

argon2 is deliberately slow and memory-hard (the library's default profile,
RFC 9106's second recommendation: 3 passes over 64 MiB), so one verification
costs tens of milliseconds of CPU. On the event loop that would delay every
call; ``Passwords`` therefore runs hashing and verification on a small thread
pool of its own (argon2-cffi releases the GIL while it works), and refuses
rather than queues once too many sign-ins wait, so a flood of sign-ins can
neither starve the loop nor grow memory without bound.

A sign-in for an unknown user still verifies against a dummy hash, so the
answer takes as long as for a known user and timing tells nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = ["Busy", "PasswordPolicyError", "Passwords", "check_policy"]

_T = TypeVar("_T")

MIN_LENGTH = 8  # NIST SP 800-63B: at least 8, no composition rules, long ones allowed
MAX_LENGTH = 256


class Busy(Exception):
    """Too many sign-ins are being checked at once; try again shortly."""


class PasswordPolicyError(ValueError):
    """The new password is too short or too long."""


def check_policy(password: str) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise PasswordPolicyError(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters")


class Passwords:
    """argon2id hashes, computed and checked on ``workers`` threads."""

    def __init__(
        self, hasher: PasswordHasher | None = None, *, workers: int = 2, max_waiting: int = 16
    ) -> None:
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="argon2")
        self._max_waiting = max_waiting
        self._waiting = 0
        self._dummy: str | None = None

    def hash_now(self, password: str) -> str:
        """Hash on the calling thread (seeding, the CLI); never on the event loop."""
        return self._hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True if ``password`` matches ``stored``; ``None`` (no such user) costs
        the same time and is never true."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self._run(self._hasher.hash, "no such user: dummy")
            await self._run(self._check, self._dummy, password)
            return False
        return await self._run(self._check, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def _run(self, fn: Callable[..., _T], *args: str) -> _T:
        if self._waiting >= self._max_waiting:
            raise Busy("too many sign-ins at once; try again in a few seconds")
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, fn, *args)
        finally:
            self._waiting -= 1
