"""Who may do what to whom: the rules by person, in one place (as datasette's
``permissions``). Every route asks ``allowed(caller, action, target)``; the
table test in tests/unit/people covers each rule.

Roles decide which routes a caller reaches (``require`` in the HTTP
adapter); these rules then decide by person:

| action            | target         | allowed                                            |
| ----------------- | -------------- | -------------------------------------------------- |
| ``taker.act``     | a taker id     | supervisor, admin; a call taker on their own id    |
| ``personal.read`` | -              | everyone but a caller whose only roles are ops     |
| ``users.manage``  | a username     | admin                                              |
| ``tokens.manage`` | owner username | admin; the owner                                   |

A configuration token with role ``taker`` names no person and no taker, so
it may not act on any taker's state: sign in as the taker, or use their
personal token.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ACTIONS", "Actor", "allowed"]


class Actor(Protocol):
    @property
    def roles(self) -> frozenset[str]: ...
    @property
    def username(self) -> str: ...
    @property
    def taker_id(self) -> str: ...


ACTIONS = frozenset({"taker.act", "personal.read", "users.manage", "tokens.manage"})
_OVERSEERS = frozenset({"admin", "supervisor"})


def allowed(caller: Actor, action: str, target: str | None = None) -> bool:
    """May ``caller`` do ``action`` to ``target``? (An unknown action raises.)"""
    roles = caller.roles
    if action == "taker.act":
        if roles & _OVERSEERS:
            return True
        return "call_taker" in roles and bool(caller.taker_id) and caller.taker_id == target
    if action == "personal.read":
        return bool(roles - {"ops"})
    if action == "users.manage":
        return "admin" in roles
    if action == "tokens.manage":
        return "admin" in roles or (bool(caller.username) and caller.username == target)
    raise ValueError(f"unknown action {action!r}; known: {sorted(ACTIONS)}")


def without_personal_data(snapshot: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    """The live state without caller numbers or names (UU PDP): for ``ops``."""
    personal = {"number", "name", "caller_name", "caller_number", "pai"}

    def clean(item: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in item.items() if k not in personal}

    out: dict[str, object] = {}
    for section, items in snapshot.items():
        if section == "queues":
            out[section] = [
                {
                    **q,
                    "waiting": [clean(c) for c in q.get("waiting", [])],  # type: ignore[attr-defined]
                    "connected": [clean(c) for c in q.get("connected", [])],  # type: ignore[attr-defined]
                }
                for q in items
            ]
        else:
            out[section] = [clean(i) for i in items]
    return out
