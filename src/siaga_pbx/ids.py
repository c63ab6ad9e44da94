"""Deterministic, project-prefixed ids for everything we create in Asterisk.

Asterisk forgets nothing we do not ask it to forget: bridges we create are never
removed for us, and while our event websocket is down Asterisk keeps the calls
going. Naming every object after the call it belongs to lets a restarted
service find its own objects (and only its own: the startup sweep touches
nothing without ``PREFIX``), and makes creating an object twice a harmless
conflict rather than a duplicate.

- caller channel: Asterisk's own uniqueid; it is the ``call_id``.
- call bridge:    ``siaga-call-<call_id>`` (the caller waits and talks in it).
- offer channel:  ``siaga-offer-<call_id>-<n>`` (the n-th handset rung for it).
- recording:      ``siaga-call-<call_id>`` (one WAV per call; the bridge's).
"""

from __future__ import annotations

import re

PREFIX = "siaga-"
_BRIDGE = "siaga-call-"
# The kinds of object we create. A channel Asterisk names itself (a caller's
# uniqueid, which may begin with a system name such as "siaga-lab-") is not
# ours, so ownership is decided by these, not by the bare prefix.
_KINDS = ("siaga-call-", "siaga-offer-", "siaga-snoop-", "siaga-disp-", "siaga-callback-")
_OFFER = re.compile(r"^siaga-offer-(?P<call_id>.+)-(?P<n>\d+)$")
# Asterisk uniqueids look like "1732812345.12" (optionally with a system-name
# prefix). We accept any id made of these characters and refuse anything else,
# so an id can never smuggle a path separator into a file name.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,96}$")


def is_safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value))


def bridge_id(call_id: str) -> str:
    return f"{_BRIDGE}{call_id}"


def call_id_from_bridge(bridge: str) -> str | None:
    if bridge.startswith(_BRIDGE):
        return bridge[len(_BRIDGE) :] or None
    return None


def recording_name(call_id: str) -> str:
    """The recording's file stem. Built from our ids only, never caller data."""
    if not is_safe_id(call_id):
        raise ValueError(f"unsafe call id for a file name: {call_id!r}")
    return f"{_BRIDGE}{call_id}"


def offer_id(call_id: str, n: int) -> str:
    return f"siaga-offer-{call_id}-{n}"


def parse_offer_id(channel_id: str) -> tuple[str, int] | None:
    m = _OFFER.match(channel_id)
    if m is None:
        return None
    return m["call_id"], int(m["n"])


def is_ours(object_id: str) -> bool:
    """An object this service created (and may sweep)."""
    return object_id.startswith(_KINDS)
