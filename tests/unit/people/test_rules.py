"""Authorisation by person, as a table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from siaga_pbx.people import allowed, without_personal_data


@dataclass(frozen=True)
class Who:
    roles: frozenset[str]
    username: str = ""
    taker_id: str = ""


TAKER1 = Who(frozenset({"call_taker"}), "taker1", "taker1")
SUP = Who(frozenset({"supervisor"}), "sup")
ADMIN = Who(frozenset({"admin"}), "admin")
OPS = Who(frozenset({"ops"}), "ops")
OPS_SUP = Who(frozenset({"ops", "supervisor"}), "both")
CONFIG_TAKER = Who(frozenset({"call_taker"}))  # a configuration token: no person
DISPATCHER = Who(frozenset({"dispatcher"}), "damkar")

TABLE = [
    (TAKER1, "taker.act", "taker1", True),
    (TAKER1, "taker.act", "taker2", False),
    (SUP, "taker.act", "taker2", True),
    (ADMIN, "taker.act", "taker2", True),
    (CONFIG_TAKER, "taker.act", "taker1", False),
    (CONFIG_TAKER, "taker.act", "", False),
    (OPS, "taker.act", "taker1", False),
    (DISPATCHER, "taker.act", "taker1", False),
    (OPS, "personal.read", None, False),
    (OPS_SUP, "personal.read", None, True),
    (TAKER1, "personal.read", None, True),
    (SUP, "personal.read", None, True),
    (ADMIN, "users.manage", "taker1", True),
    (SUP, "users.manage", "taker1", False),
    (TAKER1, "tokens.manage", "taker1", True),
    (TAKER1, "tokens.manage", "taker2", False),
    (ADMIN, "tokens.manage", "taker2", True),
    (CONFIG_TAKER, "tokens.manage", "", False),
]


@pytest.mark.parametrize(("who", "action", "target", "expected"), TABLE)
def test_allowed(who: Who, action: str, target: str | None, expected: bool) -> None:
    """Each row: this caller may (or may not) do this action to this target."""
    assert allowed(who, action, target) is expected


def test_unknown_action_raises() -> None:
    """A misspelt action is a bug, never a silent yes or no."""
    with pytest.raises(ValueError, match="unknown action"):
        allowed(ADMIN, "taker.ack", "taker1")


def test_personal_data_is_removed() -> None:
    """Caller numbers leave the state ops sees; queue names and counts stay."""
    snap = {
        "queues": [
            {
                "name": "main",
                "waiting": [{"call_id": "c1", "number": "0812", "wait_s": 3.0}],
                "connected": [{"call_id": "c2", "number": "0813", "taker_id": "taker1"}],
            }
        ],
        "takers": [{"id": "taker1", "status": "on_call"}],
        "callbacks": [{"call_id": "c3", "number": "0814", "queue": "main"}],
    }
    out = without_personal_data(snap)  # type: ignore[arg-type]
    assert "0812" not in repr(out)
    assert "0813" not in repr(out)
    assert "0814" not in repr(out)
    assert out["queues"] == [
        {
            "name": "main",
            "waiting": [{"call_id": "c1", "wait_s": 3.0}],
            "connected": [{"call_id": "c2", "taker_id": "taker1"}],
        }
    ]
    assert out["takers"] == snap["takers"]
