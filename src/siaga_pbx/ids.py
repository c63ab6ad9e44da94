"""Deterministic, project-prefixed ids for everything we create in Asterisk.

Every id the service (or either core) builds is built here, and every id it
reads back is parsed here: nowhere else spells ``"siaga-disp-"``.

Asterisk forgets nothing we do not ask it to forget: bridges we create are never
removed for us, and while our event websocket is down Asterisk keeps the calls
going. Naming every object after the call it belongs to lets a restarted
service find its own objects (and only its own: the startup sweep touches
nothing without one of our prefixes), and makes creating an object twice a
harmless conflict rather than a duplicate.

- caller channel:   Asterisk's own uniqueid; it is the ``call_id``.
- call bridge:      ``siaga-call-<call_id>`` (the caller waits and talks in it).
- recording:        ``siaga-call-<call_id>`` (the dialplan's MixMonitor file).
- offer channel:    ``siaga-offer-<call_id>-<n>`` (the n-th handset rung for it).
- dispatcher leg:   ``siaga-disp-<call_id>-<n>`` (a dispatcher's or supervisor's phone).
- snoop channel:    ``siaga-snoop-<call_id>-<n>`` (and the private bridge of the same id).
- playbacks:        ``<call_id>-greeting``, ``<call_id>-<prompt>-<n>``,
                    ``<call_id>-ringback``, ``siaga-tone-<call_id>-<n>``.
- core timers:      ``siaga-<kind>-<key>``; conference timers ``siaga-conf-<kind>-<call>-<n>``.

``classify`` tells, from a channel id alone, which of these a channel is: the
one translator (``service._translate``) decides on that and nothing else.
"""

from __future__ import annotations

import hashlib
import re
from enum import Enum

PREFIX = "siaga-"
_BRIDGE = "siaga-call-"
_OFFER_PREFIX = "siaga-offer-"
_LEG_PREFIX = "siaga-disp-"
_SNOOP_PREFIX = "siaga-snoop-"
CONFERENCE_TIMER_PREFIX = "siaga-conf-"
# The kinds of object we create. A channel Asterisk names itself (a caller's
# uniqueid, which may begin with a system name such as "siaga-lab-") is not
# ours, so ownership is decided by these, not by the bare prefix.
_KINDS = (_BRIDGE, _OFFER_PREFIX, _SNOOP_PREFIX, _LEG_PREFIX, "siaga-callback-")
_NUMBERED = re.compile(r"^(?P<call_id>.+)-(?P<n>\d+)$")
# Asterisk uniqueids look like "1732812345.12" (optionally with a system-name
# prefix). We accept any id made of these characters and refuse anything else,
# so an id can never smuggle a path separator into a file name.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,96}$")
# Ids are built from call ids, which are far shorter in practice; a longer
# one is shortened stably so every id stays within Asterisk's limits.
_KEY_LIMIT = 100


class ChannelKind(Enum):
    """What a channel in our app is, decided by its id alone."""

    CALLER = "caller"  # a 112 caller (Asterisk's uniqueid, safe characters)
    OFFER = "offer"  # a call taker's handset we rang for a caller
    LEG = "leg"  # a dispatcher's or supervisor's phone in a conference
    SNOOP = "snoop"  # a snoop channel of a listening/whispering party
    OURS = "ours"  # another object of ours (never a caller)
    UNSAFE = "unsafe"  # not ours, and no name may be built from it (fallback)


def fit(text: str, limit: int = 128) -> str:
    """``text``, or a stable shortening of it (prefix and digest) to ``limit``."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: limit - 17]}~{digest}"


def _key(call_id: str) -> str:
    return fit(call_id, _KEY_LIMIT)


def is_safe_id(value: str) -> bool:
    return bool(_SAFE_ID.match(value))


def is_ours(object_id: str) -> bool:
    """An object this service created (and may sweep)."""
    return object_id.startswith(_KINDS)


def classify(channel_id: str) -> ChannelKind:
    """The kind of a channel, from its id (see the module doc). A leg or
    snoop id with unsafe characters is still ours (never a caller), but is
    ``OURS``: nothing is built from it."""
    if parse_offer_id(channel_id) is not None:
        return ChannelKind.OFFER
    if channel_id.startswith(_LEG_PREFIX) and is_safe_id(channel_id):
        return ChannelKind.LEG
    if channel_id.startswith(_SNOOP_PREFIX) and is_safe_id(channel_id):
        return ChannelKind.SNOOP
    if is_ours(channel_id):
        return ChannelKind.OURS
    return ChannelKind.CALLER if is_safe_id(channel_id) else ChannelKind.UNSAFE


def call_of(object_id: str) -> str | None:
    """The call an offer, leg or snoop (channel or bridge) belongs to."""
    for prefix in (_OFFER_PREFIX, _LEG_PREFIX, _SNOOP_PREFIX):
        parsed = _parse_numbered(object_id, prefix)
        if parsed is not None:
            return parsed[0]
    return call_id_from_bridge(object_id)


# ---- the call bridge and its recording ---------------------------------------------


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


# ---- handset offers ------------------------------------------------------------------


def offer_id(call_id: str, n: int) -> str:
    """The channel id of the ``n``-th handset rung for ``call_id``."""
    return f"{_OFFER_PREFIX}{_key(call_id)}-{n}"


def parse_offer_id(channel_id: str) -> tuple[str, int] | None:
    """``(call_id, n)`` of an offer channel, or None for any other id."""
    return _parse_numbered(channel_id, _OFFER_PREFIX)


def call_of_offer(attempt_id: str) -> str | None:
    parsed = parse_offer_id(attempt_id)
    return parsed[0] if parsed else None


# ---- conference legs and snoops ----------------------------------------------------------


def leg_id(call_id: str, n: int) -> str:
    """A dispatcher's (or supervisor's) phone channel in ``call_id``'s conference."""
    return f"{_LEG_PREFIX}{_key(call_id)}-{n}"


def parse_leg_id(channel_id: str) -> tuple[str, int] | None:
    return _parse_numbered(channel_id, _LEG_PREFIX)


def leg_number(channel_id: str) -> int:
    """The ``n`` of ``siaga-disp-<call>-<n>`` (0 when a foreign id has none)."""
    tail = channel_id.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def is_leg_of(channel_id: str, call_id: str) -> bool:
    return channel_id.startswith(f"{_LEG_PREFIX}{_key(call_id)}-")


def is_leg(channel_id: str) -> bool:
    return channel_id.startswith(_LEG_PREFIX)


def snoop_id(call_id: str, n: int) -> str:
    """A snoop channel on ``call_id`` (its private bridge has the same id)."""
    return f"{_SNOOP_PREFIX}{_key(call_id)}-{n}"


def is_snoop(object_id: str) -> bool:
    return object_id.startswith(_SNOOP_PREFIX)


def is_snoop_of(object_id: str, call_id: str) -> bool:
    return object_id.startswith(f"{_SNOOP_PREFIX}{_key(call_id)}-")


# ---- playbacks and timers ------------------------------------------------------------------


def playback_id(call_id: str, prompt: str, n: int) -> str:
    """A prompt's playback id (the greeting has one per call: it is cut off by id)."""
    if prompt == "greeting":
        return f"{_key(call_id)}-greeting"
    return f"{_key(call_id)}-{prompt.replace(':', '')}-{n}"


def ringback_id(call_id: str) -> str:
    return f"{call_id}-ringback"


def tone_id(call_id: str, n: int) -> str:
    """A conference tone (joined, left, failed) played to the call or one party."""
    return f"siaga-tone-{_key(call_id)}-{n}"


def core_timer_id(kind: str, key: str) -> str:
    return fit(f"{PREFIX}{kind}-{key}")


def conference_timer_id(kind: str, call_id: str, n: int) -> str:
    return f"{CONFERENCE_TIMER_PREFIX}{kind}-{_key(call_id)}-{n}"


def _parse_numbered(channel_id: str, prefix: str) -> tuple[str, int] | None:
    if not channel_id.startswith(prefix):
        return None
    m = _NUMBERED.match(channel_id[len(prefix) :])
    if m is None:
        return None
    return m["call_id"], int(m["n"])


# ---- channel variables ---------------------------------------------------------------
# Set by the dialplan before Stasis() and exported in every channel snapshot
# (ari.conf ``channelvars``): the raw SIP headers, unparsed.
VAR_FROM = "SIAGA_FROM"
VAR_PAI = "SIAGA_PAI"
# The same headers' exact bytes: base64, % ( ) escaped first ([siaga-raw-header]).
VAR_FROM_B64 = "SIAGA_FROM_B64"
VAR_PAI_B64 = "SIAGA_PAI_B64"
# Set by us on a caller we hand back to the dialplan: names its fallback recording.
VAR_RECORDING_KIND = "SIAGA_RECORDING_KIND"
# Set by us on a caller we send to another centre: the dial string.
VAR_OVERFLOW_DIAL = "SIAGA_OVERFLOW_DIAL"
# Set by us on a feature-code call before it returns to the dialplan.
VAR_FEATURE_RESULT = "SIAGA_FEATURE_RESULT"
# Set by us on a conference leg: who it is and its role, for adoption after a restart.
VAR_PARTY = "SIAGA_PARTY"
VAR_ROLE = "SIAGA_ROLE"
# Set by us on the caller when a taker connects (epoch seconds): talk time survives a restart.
VAR_ANSWERED_AT = "SIAGA_ANSWERED_AT"
