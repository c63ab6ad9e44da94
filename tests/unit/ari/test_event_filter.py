"""The ARI event filter lets through every event type the service handles."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from siaga_pbx import ari
from siaga_pbx.service import EVENTS_USED

SRC = Path(__file__).resolve().parents[3] / "src" / "siaga_pbx"


def event_type(cls: type) -> str | None:
    field = getattr(cls, "model_fields", {}).get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if len(args) == 1 else None


def test_every_event_the_code_names_is_allowed() -> None:
    """An event model named anywhere in the service must pass Asterisk's filter."""
    named = set()
    for path in SRC.rglob("*.py"):
        if path.parent.name == "ari":
            continue  # the client itself models every event
        named |= set(re.findall(r"\bari\.([A-Z][A-Za-z]+)\b", path.read_text()))
    types = {t for name in named if (t := event_type(getattr(ari, name, object))) is not None}
    assert "StasisStart" in types  # the scan works
    assert types <= EVENTS_USED, types - EVENTS_USED


def test_the_filter_names_only_real_events() -> None:
    modelled = {t for name in dir(ari) if (t := event_type(getattr(ari, name))) is not None}
    assert modelled >= EVENTS_USED, EVENTS_USED - modelled
