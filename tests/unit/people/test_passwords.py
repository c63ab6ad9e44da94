"""Password hashing: argon2id, verified off the loop, bounded."""

from __future__ import annotations

import asyncio

import pytest

from siaga_pbx.people import Busy, PasswordPolicyError, Passwords
from siaga_pbx.people._passwords import check_policy

from ._support import FAST


class TestPasswords:
    async def test_hash_is_argon2id_and_verifies(self) -> None:
        """A hash is argon2id; the right password matches and a wrong one does not."""
        pw = Passwords()  # the real default parameters
        stored = await pw.hash("correct horse")
        assert stored.startswith("$argon2id$")
        assert "correct horse" not in stored
        assert await pw.verify(stored, "correct horse")
        assert not await pw.verify(stored, "correct horsE")
        pw.close()

    async def test_unknown_user_never_matches(self) -> None:
        """Verifying against no hash (an unknown user) is False, whatever the password."""
        pw = Passwords(FAST)
        assert not await pw.verify(None, "no such user: dummy")
        assert not await pw.verify(None, "")
        pw.close()

    async def test_garbage_hash_is_false_not_an_error(self) -> None:
        """A stored value that is not an argon2 hash fails verification quietly."""
        pw = Passwords(FAST)
        assert not await pw.verify("plaintext", "plaintext")
        pw.close()

    async def test_too_many_waiting_is_busy(self) -> None:
        """Past ``max_waiting`` concurrent checks, the next one is refused at once."""
        pw = Passwords(FAST, workers=1, max_waiting=2)
        stored = FAST.hash("pw-123456")
        results = await asyncio.gather(
            *(pw.verify(stored, "pw-123456") for _ in range(3)), return_exceptions=True
        )
        assert sum(isinstance(r, Busy) for r in results) == 1
        assert results.count(True) == 2
        pw.close()

    def test_policy(self) -> None:
        """A password has 8 to 256 characters."""
        check_policy("12345678")
        for bad in ("1234567", "x" * 257):
            with pytest.raises(PasswordPolicyError):
                check_policy(bad)
