"""The one translator: each ARI event is classified once and becomes events
for both cores.

``translate`` is pure: it reads the event and a taker lookup, nothing else,
so a malformed event can be fuzzed without a network. A channel's part in a
call is decided by its id alone (``ids.classify``), and a hang-up cause by
the one Q.850 table (``core.ring_failure``, ``core.NORMAL_CLEARING``).

How a call sits in Asterisk (``siaga_pbx.ids`` has the names):
- The caller's channel enters the app from the dialplan with args
  ``caller,<trunk>[,<queue>]``, already answered and recorded by the
  dialplan. It waits, hears prompts and hold, and talks in its own mixing
  bridge ``siaga-call-<call_id>``.
- Each offer to a call taker is a channel we originate, ``siaga-offer-<call>-<n>``;
  it enters the app when the handset answers, then joins the caller's bridge.
- A dispatcher's or supervisor's phone is a leg ``siaga-disp-<call>-<n>``; a
  listening or whispering party hears through a snoop ``siaga-snoop-<call>-<n>``.
- A feature-code call (``*11`` ...) enters with args ``feature,<action>,<endpoint>``.

Conference events come first in the result: the conference core learns that
a caller or taker left before the distribution core reacts to it (the order
the service has always fed them in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from .. import ari, callerid, conference, core, ids
from ..ids import ChannelKind
from . import _handsets

log = structlog.get_logger(__name__)

# The ARI event types this service acts on. Asterisk is asked to send only
# these (``recovery`` sets the application's event filter): the rest are most
# of its events, and each costs Asterisk a JSON dump and us a parse. A new
# handler must add its type here (tests/unit/ari checks).
EVENTS_USED = frozenset(
    {
        "ApplicationReplaced",
        "ChannelDestroyed",
        "ChannelDtmfReceived",
        "ChannelStateChange",
        "ContactStatusChange",
        "DeviceStateChanged",
        "PlaybackFinished",
        "StasisEnd",
        "StasisStart",
    }
)

# Asterisk device states (``ast_devstate_str``) of a taker's handset. Busy
# includes our own offer or call on it: the core never offers to a taker it
# already rang, and after our call ends the handset is offered again once it
# reports NOT_INUSE (app_queue's ``ringinuse=no`` does the same).
_DEVICE_UNREACHABLE = frozenset({"UNAVAILABLE", "INVALID"})
_DEVICE_BUSY = frozenset({"INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})


@dataclass(frozen=True, slots=True)
class HandBack:
    """A caller we cannot serve must go straight to the dialplan fallback."""

    channel_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    """A call taker dialled a feature code (login, logout, pause, unpause)."""

    channel_id: str
    taker_id: str | None
    action: str


Translated = core.Event | conference.Event | FeatureRequest | HandBack
TakerLookup = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class TakerDirectory:
    """Maps a handset endpoint ("PJSIP/taker1" or "taker1") to its taker id."""

    by_endpoint: Mapping[str, str]

    @classmethod
    def from_config(cls, centre: core.CentreConfig) -> TakerDirectory:
        table: dict[str, str] = {}
        for t in centre.takers:
            table[t.endpoint] = t.taker_id
            table[t.endpoint.split("/", 1)[-1]] = t.taker_id
        return cls(table)

    def taker_for(self, endpoint: str) -> str | None:
        return self.by_endpoint.get(endpoint)

    def endpoints(self) -> list[str]:
        """The handsets' full endpoint names ("PJSIP/taker1")."""
        return sorted({e for e in self.by_endpoint if "/" in e})


def caller_identity_of(chan: ari.Channel) -> core.CallerIdentity:
    """The caller's identity from the raw headers the dialplan exported."""
    vars_ = chan.channelvars or {}
    return callerid.identity(
        from_header=str(vars_.get(ids.VAR_FROM) or ""),
        pai_header=str(vars_.get(ids.VAR_PAI) or ""),
        channel_number=chan.caller.number if chan.caller else "",
        channel_name=chan.caller.name if chan.caller else "",
        from_b64=str(vars_.get(ids.VAR_FROM_B64) or ""),
        pai_b64=str(vars_.get(ids.VAR_PAI_B64) or ""),
    )


def caller_arrived(event: ari.StasisStart, default_queue: str) -> core.CallerArrived:
    chan = event.channel
    args = list(event.args)
    trunk = callerid.clean_text(args[1], 64) if len(args) > 1 else ""
    queue = args[2] if len(args) > 2 and ids.is_safe_id(args[2]) else default_queue
    return core.CallerArrived(
        call_id=chan.id,
        caller=caller_identity_of(chan),
        queue=queue,
        trunk=trunk,
        answered=chan.state == "Up",
    )


def call_id_of_target(target_uri: str) -> str | None:
    """The call a playback belongs to: "bridge:siaga-call-X" or "channel:X"."""
    kind, _, obj = target_uri.partition(":")
    if kind == "bridge":
        return ids.call_id_from_bridge(obj)
    if kind == "channel" and obj and not ids.is_ours(obj):
        return obj
    return None


def translate(event: ari.Event, taker_for: TakerLookup, default_queue: str) -> list[Translated]:
    """ARI event -> events for the conference core, then for the distribution
    core (and requests the service carries out itself)."""
    if isinstance(event, ari.StasisStart):
        return _entered(event, taker_for, default_queue)
    if isinstance(event, (ari.StasisEnd, ari.ChannelDestroyed)):
        return _left(event)
    if isinstance(event, ari.ChannelStateChange):
        chan = event.channel
        if chan.state == "Ringing" and ids.classify(chan.id) is ChannelKind.OFFER:
            return [core.HandsetRinging(attempt_id=chan.id)]
        return []
    if isinstance(event, ari.ChannelDtmfReceived):
        # Digits count only on a taker's offer channel: the caller's (and a
        # dispatcher's) never become requests.
        if ids.classify(event.channel.id) is ChannelKind.OFFER:
            return [conference.KeyPressed(event.channel.id, event.digit)]
        return []
    if isinstance(event, ari.PlaybackFinished):
        call_id = call_id_of_target(event.playback.target_uri)
        if call_id is None or not ids.is_safe_id(event.playback.id):
            return []
        return [core.PromptFinished(call_id=call_id, playback_id=event.playback.id)]
    if isinstance(event, ari.ContactStatusChange):
        return _lost(event)
    if isinstance(event, ari.DeviceStateChanged):
        device = event.device_state
        taker = taker_for(device.name)
        if taker is None:
            return []
        return [
            core.TakerDeviceChanged(
                taker,
                reachable=device.state not in _DEVICE_UNREACHABLE,
                in_use=device.state in _DEVICE_BUSY,
            )
        ]
    return []


def _entered(
    event: ari.StasisStart, taker_for: TakerLookup, default_queue: str
) -> list[Translated]:
    chan = event.channel
    kind = ids.classify(chan.id)
    if kind is ChannelKind.OFFER:
        return [core.HandsetAnswered(attempt_id=chan.id)]
    if kind is ChannelKind.LEG:
        return [conference.PartyAnswered(chan.id)]
    if kind is ChannelKind.SNOOP:
        return [conference.SnoopReady(chan.id)]
    if kind is ChannelKind.OURS:
        return []
    if event.args[:1] == ("feature",):
        action = event.args[1] if len(event.args) > 1 else ""
        endpoint = event.args[2] if len(event.args) > 2 else ""
        return [FeatureRequest(chan.id, taker_for(endpoint), action)]
    if kind is ChannelKind.UNSAFE:
        # Asterisk made this id; an unsafe one means a misconfigured system
        # name. Still never drop the caller: the dialplan fallback takes it.
        log.error("ari.caller.unsafe_id", channel_id=repr(chan.id))
        return [HandBack(chan.id, "unsafe channel id")]
    return [caller_arrived(event, default_queue)]


def _left(event: ari.StasisEnd | ari.ChannelDestroyed) -> list[Translated]:
    """A channel left our app (StasisEnd) or is gone (ChannelDestroyed, which
    follows with the Q.850 cause). Each core reacts to the report it needs."""
    chan = event.channel
    destroyed = isinstance(event, ari.ChannelDestroyed)
    cause = event.cause if isinstance(event, ari.ChannelDestroyed) else core.NORMAL_CLEARING
    kind = ids.classify(chan.id)
    if kind is ChannelKind.OFFER:
        if not destroyed:
            return []  # ChannelDestroyed follows with the cause
        if chan.state != "Up":
            return [core.HandsetFailed(chan.id, core.ring_failure(cause))]
        call_id = ids.call_of_offer(chan.id) or ""
        return [conference.TakerLeft(call_id, chan.id), core.HandsetHungUp(chan.id, cause=cause)]
    if kind is ChannelKind.LEG:
        return [conference.PartyGone(chan.id, cause)] if destroyed else []
    if kind is not ChannelKind.CALLER:
        return []
    # StasisEnd comes first; each core ignores the second report.
    return [conference.CallerLeft(chan.id, cause), core.CallerHungUp(call_id=chan.id, cause=cause)]


def _lost(event: ari.ContactStatusChange) -> list[Translated]:
    """A handset gone without a BYE (``service._handsets``: its contact stopped
    answering qualify). A taker's offer on it is a drop for the distribution
    core; a dispatcher's or supervisor's leg a failed leg for the conference
    core. Nothing else on the endpoint is touched, so never a caller."""
    out: list[Translated] = []
    for chan_id in _handsets.lost_channels(event):
        kind = ids.classify(chan_id)
        if kind is ChannelKind.OFFER:
            out.append(core.HandsetLost(chan_id))
        elif kind is ChannelKind.LEG:
            out.append(conference.PartyLost(chan_id))
    return out


def feature_event(req: FeatureRequest) -> core.Event | None:
    """The core event for a feature code, or None when it is unknown."""
    if req.taker_id is None:
        return None
    match req.action:
        case "login":
            return core.TakerLoggedIn(req.taker_id)
        case "logout":
            return core.TakerLoggedOut(req.taker_id)
        case "pause":
            return core.TakerPaused(req.taker_id, reason="handset")
        case "unpause":
            return core.TakerUnpaused(req.taker_id)
        case _:
            return None
