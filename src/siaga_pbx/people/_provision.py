"""Provisioning users from the command line (``siaga-pbx user-add``).

How production gets its first admin: there are no lab users there, so an
operator with database access runs ``siaga-pbx user-add`` once; that admin
then manages everyone else through the API. The password is read from the
terminal (twice, not echoed) or one line of standard input, never from an
argument (which ``ps`` and shell history would keep).
"""

from __future__ import annotations

from ._models import User
from ._passwords import Passwords, check_policy
from ._store import UserStore

__all__ = ["add_user"]


async def add_user(
    dsn: str,
    *,
    username: str,
    display_name: str,
    roles: tuple[str, ...],
    password: str,
    taker_id: str | None = None,
    handset: str | None = None,
    agency: str | None = None,
) -> User:
    """Create one user in PostgreSQL (raises ``InvalidUser``, ``PasswordPolicyError``,
    ``UsernameTaken``)."""
    check_policy(password)
    passwords = Passwords()
    try:
        draft = User(
            user_id="",
            username=username,
            display_name=display_name,
            roles=roles,
            enabled=True,
            password_hash=await passwords.hash(password),
            taker_id=taker_id,
            handset=handset,
            agency=agency,
        )
    finally:
        passwords.close()
    store = UserStore(dsn)
    try:
        return await store.create(draft)
    finally:
        await store.close()
