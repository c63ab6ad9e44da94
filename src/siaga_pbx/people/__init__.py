"""People, not tokens: named users with roles, sessions, personal API tokens.

The public surface:

- ``People``: the directory of a running service (users copied from
  PostgreSQL into memory and a local state file, browser sessions, personal
  tokens, sign-in with throttling); every question a request asks is
  answered from memory. ``SignInEvent`` is what ``on_sign_in`` receives.
- ``allowed(caller, action, target)``: the rules by person, in one place.
- ``PeopleSettings``: ``[people]`` in the settings.
- ``Passwords``: argon2id hashing off the event loop.

See docs/PEOPLE.md.
"""

from ._models import ROLES, ApiToken, InvalidUser, User
from ._passwords import Busy, PasswordPolicyError, Passwords
from ._people import (
    DirectoryUnavailable,
    People,
    Person,
    SignedIn,
    SignInEvent,
    SignInRefused,
)
from ._provision import add_user
from ._rules import ACTIONS, allowed, without_personal_data
from ._seed import LAB_USERS
from ._sessions import csrf_matches, csrf_token
from ._settings import PeopleSettings
from ._store import NoSuchUser, StaleVersion, UsernameTaken
from ._tokens import PREFIX as TOKEN_PREFIX

__all__ = [
    "ACTIONS",
    "LAB_USERS",
    "ROLES",
    "TOKEN_PREFIX",
    "ApiToken",
    "Busy",
    "DirectoryUnavailable",
    "InvalidUser",
    "NoSuchUser",
    "PasswordPolicyError",
    "Passwords",
    "People",
    "PeopleSettings",
    "Person",
    "SignInEvent",
    "SignInRefused",
    "SignedIn",
    "StaleVersion",
    "User",
    "UsernameTaken",
    "add_user",
    "allowed",
    "csrf_matches",
    "csrf_token",
    "without_personal_data",
]
