"""The one place where ARI's vocabulary meets the core's.

Inbound, ``translate()`` turns an ARI event into zero or more core events. It
is pure: it reads only the event and the taker directory, so a malformed event
can be fuzzed without a network. Outbound, ``AriCommandRunner.run()`` carries
out one core command with REST calls.

How a call sits in Asterisk (see ``siaga_pbx.ids`` for the names):
- The caller's channel enters the app from the dialplan with args
  ``caller,<trunk>[,<queue>]``, already answered and recorded by the
  dialplan (``Answer(,i)``, ``MixMonitor``; we answer only a channel that is
  not up yet). We put it at once into its own mixing bridge
  ``siaga-call-<call_id>``. The caller waits, hears prompts and hold, and
  talks in that one bridge; later joins (dispatchers, a second taker after a
  drop) land in the same bridge, and the channel's recording covers the whole
  call from arrival: what a caller says before anyone answers is evidence too.
- Each offer to a taker is a channel we originate with id
  ``siaga-offer-<call_id>-<n>`` and args ``offer,<call_id>``. It enters the app
  only when the handset answers; then it joins the caller's bridge.
- Idempotence: every REST call that may be repeated after a restart or a
  retry treats "already exists" (409) and "already gone" (404) as done.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from .. import ari, callerid, conference, core, ids
from ..config import PromptSettings

log = structlog.get_logger(__name__)

# The ARI event types this service acts on (``translate``, ``translate_conference``,
# the service's recording and step-down paths). Asterisk is asked to send only
# these: the rest (variable changes, bridge entries, dial progress, playback
# starts ...) are most of its events, and each costs Asterisk a JSON dump and
# us a parse. A new handler must add its type here (tests/unit/ari checks).
EVENTS_USED = frozenset(
    {
        "ApplicationReplaced",
        "ChannelDestroyed",
        "ChannelDtmfReceived",
        "ChannelStateChange",
        "DeviceStateChanged",
        "PlaybackFinished",
        "StasisEnd",
        "StasisStart",
    }
)

# Waits before answering a caller again when Asterisk did not reply in time.
_ANSWER_RETRIES = (0.2, 0.5)

# Q.850 causes of a handset offer that ended before answer.
_BUSY = frozenset({17})
_NO_ANSWER = frozenset({18, 19, 31})
_REJECTED = frozenset({21})

# Asterisk device states (``ast_devstate_str``) of a taker's handset. Busy
# includes our own offer or call on it: the core never offers to a taker it
# already rang, and after our call ends the handset is offered again once it
# reports NOT_INUSE (app_queue's ``ringinuse=no`` does the same).
_DEVICE_UNREACHABLE = frozenset({"UNAVAILABLE", "INVALID"})
_DEVICE_BUSY = frozenset({"INUSE", "BUSY", "RINGING", "RINGINUSE", "ONHOLD"})

# Channel variables the dialplan sets before Stasis() and ari.conf exports in
# every channel snapshot (``channelvars``): the raw SIP headers, unparsed.
VAR_FROM = "SIAGA_FROM"
VAR_PAI = "SIAGA_PAI"
# Set on a caller we hand back to the dialplan: names its fallback recording.
VAR_RECORDING_KIND = "SIAGA_RECORDING_KIND"


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


def _hangup_failure(cause: int) -> core.HandsetFailure:
    if cause in _BUSY:
        return core.HandsetFailure.BUSY
    if cause in _NO_ANSWER:
        return core.HandsetFailure.NO_ANSWER
    if cause in _REJECTED:
        return core.HandsetFailure.REJECTED
    return core.HandsetFailure.UNREACHABLE


def call_id_of_target(target_uri: str) -> str | None:
    """The call a playback belongs to: "bridge:siaga-call-X" or "channel:X"."""
    kind, _, obj = target_uri.partition(":")
    if kind == "bridge":
        return ids.call_id_from_bridge(obj)
    if kind == "channel" and obj and not ids.is_ours(obj):
        return obj
    return None


def caller_identity_of(chan: ari.Channel) -> core.CallerIdentity:
    """The caller's identity from the raw headers the dialplan exported."""
    vars_ = chan.channelvars or {}
    return callerid.identity(
        from_header=str(vars_.get(VAR_FROM) or ""),
        pai_header=str(vars_.get(VAR_PAI) or ""),
        channel_number=chan.caller.number if chan.caller else "",
        channel_name=chan.caller.name if chan.caller else "",
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


def translate(
    event: ari.Event, takers: TakerDirectory, default_queue: str
) -> list[core.Event | FeatureRequest | HandBack]:
    """ARI event -> core events (and requests the service handles itself)."""
    if isinstance(event, ari.StasisStart):
        kind = event.args[0] if event.args else "caller"
        chan = event.channel
        if chan.id.startswith(_CONFERENCE_KINDS):
            return []  # a dispatcher/supervisor leg or a snoop: see translate_conference
        if kind == "offer" or ids.parse_offer_id(chan.id) is not None:
            return [core.HandsetAnswered(attempt_id=chan.id)]
        if kind == "feature":
            action = event.args[1] if len(event.args) > 1 else ""
            endpoint = event.args[2] if len(event.args) > 2 else ""
            return [FeatureRequest(chan.id, takers.taker_for(endpoint), action)]
        if not ids.is_safe_id(chan.id):
            # Asterisk made this id; an unsafe one means a misconfigured
            # system name. Still never drop the caller: the dialplan fallback
            # takes it when we hand it back.
            log.error("ari.caller.unsafe_id", channel_id=repr(chan.id))
            return [HandBack(chan.id, "unsafe channel id")]
        return [caller_arrived(event, default_queue)]

    if isinstance(event, (ari.StasisEnd, ari.ChannelDestroyed)):
        chan = event.channel
        if ids.parse_offer_id(chan.id) is not None:
            if isinstance(event, ari.StasisEnd):
                return []  # ChannelDestroyed follows with the cause
            if chan.state == "Up":
                return [core.HandsetHungUp(attempt_id=chan.id, cause=event.cause)]
            return [core.HandsetFailed(chan.id, _hangup_failure(event.cause))]
        if ids.is_ours(chan.id) or not ids.is_safe_id(chan.id):
            return []
        cause = event.cause if isinstance(event, ari.ChannelDestroyed) else 16
        # StasisEnd comes first; the core ignores the second report.
        return [core.CallerHungUp(call_id=chan.id, cause=cause)]

    if isinstance(event, ari.ChannelStateChange):
        if event.channel.state == "Ringing" and ids.parse_offer_id(event.channel.id):
            return [core.HandsetRinging(attempt_id=event.channel.id)]
        return []

    if isinstance(event, ari.PlaybackFinished):
        call_id = call_id_of_target(event.playback.target_uri)
        if call_id is None or not ids.is_safe_id(event.playback.id):
            return []
        return [core.PromptFinished(call_id=call_id, playback_id=event.playback.id)]

    if isinstance(event, ari.DeviceStateChanged):
        device = event.device_state
        taker = takers.taker_for(device.name)
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


# Channels of the conference core (siaga_pbx.conference): party legs and snoops.
_CONFERENCE_KINDS = ("siaga-disp-", "siaga-snoop-")


def translate_conference(event: ari.Event) -> list[conference.Event]:
    """ARI event -> conference events. Pure, like ``translate``.

    DTMF counts only on a taker's offer channel: the caller's digits (and a
    dispatcher's) never become requests."""
    if isinstance(event, ari.ChannelDtmfReceived):
        if ids.parse_offer_id(event.channel.id) is None:
            return []
        return [conference.KeyPressed(event.channel.id, event.digit)]
    if isinstance(event, ari.StasisStart):
        chan_id = event.channel.id
        if chan_id.startswith("siaga-disp-") and ids.is_safe_id(chan_id):
            return [conference.PartyAnswered(chan_id)]
        if chan_id.startswith("siaga-snoop-") and ids.is_safe_id(chan_id):
            return [conference.SnoopReady(chan_id)]
        return []
    if isinstance(event, (ari.StasisEnd, ari.ChannelDestroyed)):
        chan = event.channel
        cause = event.cause if isinstance(event, ari.ChannelDestroyed) else 16
        if chan.id.startswith("siaga-disp-") and ids.is_safe_id(chan.id):
            # ChannelDestroyed carries the cause that tells busy from no answer.
            gone = isinstance(event, ari.ChannelDestroyed)
            return [conference.PartyGone(chan.id, cause)] if gone else []
        offer = ids.parse_offer_id(chan.id)
        if offer is not None:
            gone = isinstance(event, ari.ChannelDestroyed) and chan.state == "Up"
            return [conference.TakerLeft(offer[0], chan.id)] if gone else []
        if ids.is_ours(chan.id) or not ids.is_safe_id(chan.id):
            return []
        return [conference.CallerLeft(chan.id, cause)]
    return []


_FEATURES: Mapping[str, type[core.TakerLoggedIn | core.TakerLoggedOut | core.TakerUnpaused]] = {
    "login": core.TakerLoggedIn,
    "logout": core.TakerLoggedOut,
    "unpause": core.TakerUnpaused,
}


def feature_event(req: FeatureRequest) -> core.Event | None:
    """The core event for a feature code, or None when it is unknown."""
    if req.taker_id is None:
        return None
    if req.action == "pause":
        return core.TakerPaused(req.taker_id, reason="handset")
    factory = _FEATURES.get(req.action)
    return factory(req.taker_id) if factory else None


def _dial_caller_id(caller: core.CallerIdentity) -> str:
    """A caller id string for the handset's display, safe to embed."""
    name = "".join(ch for ch in caller.name if ch not in '"<>\\')[:40]
    number = caller.best_number or "unknown"
    return f'"{name}" <{number}>' if name else f"<{number}>"


class AriCommandRunner:
    """Carries out core commands that touch Asterisk. Raises on failure."""

    def __init__(self, rest: ari.AriRest, app: str, prompts: PromptSettings) -> None:
        self._rest = rest
        self._app = app
        self._prompts = prompts

    def _media(self, prompt: str) -> str:
        if prompt.startswith("position:"):
            return f"digits:{int(prompt.split(':', 1)[1])}"
        return str(getattr(self._prompts, prompt, f"sound:siaga/{prompt}"))

    async def _ignoring(self, coro: Awaitable[object], *errors: type[Exception]) -> None:
        """Await ``coro``; the given errors mean "already done" (see the module doc)."""
        with contextlib.suppress(*errors):
            await coro

    async def _answer(self, call_id: str) -> None:
        """Answer the caller. An overloaded Asterisk may not reply in time;
        answering twice is harmless, so a timeout or a 5xx is tried again."""
        for delay in _ANSWER_RETRIES:
            try:
                await self._rest.answer(call_id)
            except (ari.AriUnavailable, ari.AriServerError) as exc:
                log.warning("ari.answer_retry", error=str(exc)[:200], retry_in_s=delay)
                await asyncio.sleep(delay)
            else:
                return
        await self._rest.answer(call_id)

    async def _ensure_call_bridge(self, call_id: str) -> None:
        """The caller in their own mixing bridge: create what is missing.
        Idempotent; a bridge made for a caller who is gone is destroyed
        again, so nothing is left behind. (The call is recorded by the
        dialplan's MixMonitor on the caller's channel, not by the bridge.)"""
        rest, bridge = self._rest, ids.bridge_id(call_id)
        try:
            await rest.create_bridge(bridge, type="mixing", name=bridge)
        except ari.AriConflict:
            if call_id in (await rest.get_bridge(bridge)).channels:
                return  # whole already
        try:
            await rest.add_channel(bridge, [call_id])
        except ari.AriError:
            await self._ignoring(rest.destroy_bridge(bridge), ari.AriNotFound)
            raise

    async def _on_call_bridge(self, call_id: str, op: Callable[[], Awaitable[object]]) -> None:
        """Run ``op`` on the caller's bridge. If Asterisk no longer has that
        bridge (an earlier command was lost to a timeout), rebuild it and
        try once more: one lost reply must not strand a caller outside any
        bridge, where every later command would fail in a loop."""
        try:
            await op()
        except ari.AriNotFound as exc:
            if "bridge" not in exc.message.lower():
                raise
            log.warning("ari.call_bridge_rebuilt", error=str(exc)[:200])
            await self._ensure_call_bridge(call_id)
            await op()

    async def run(self, cmd: core.Command) -> None:
        rest = self._rest
        if isinstance(cmd, core.AnswerCaller):
            if not cmd.answered:  # the shipped dialplan answers before Stasis()
                await self._answer(cmd.call_id)
            await self._ensure_call_bridge(cmd.call_id)
        elif isinstance(cmd, core.PlayPrompt):
            params = {
                "media": self._media(cmd.prompt),
                "playbackId": cmd.playback_id,
                "lang": self._prompts.language,
            }
            path = f"/bridges/{ids.bridge_id(cmd.call_id)}/play"
            await self._on_call_bridge(
                cmd.call_id, lambda: rest.request("POST", path, params=params)
            )
        elif isinstance(cmd, core.StopPrompt):
            await self._ignoring(rest.stop_playback(cmd.playback_id), ari.AriNotFound)
        elif isinstance(cmd, core.StartHold):
            bridge = ids.bridge_id(cmd.call_id)
            if cmd.mode is core.HoldMode.MUSIC:
                path, params = f"/bridges/{bridge}/moh", {"mohClass": cmd.music_class}
            else:
                path = f"/bridges/{bridge}/play"
                params = {"media": self._prompts.ringback, "playbackId": ringback_id(cmd.call_id)}
            await self._on_call_bridge(
                cmd.call_id, lambda: rest.request("POST", path, params=params)
            )
        elif isinstance(cmd, core.StopHold):
            if cmd.mode is core.HoldMode.MUSIC:
                await self._ignoring(
                    rest.request("DELETE", f"/bridges/{ids.bridge_id(cmd.call_id)}/moh"),
                    ari.AriNotFound,
                    ari.AriConflict,
                )
            else:
                await self._ignoring(rest.stop_playback(ringback_id(cmd.call_id)), ari.AriNotFound)
        elif isinstance(cmd, core.RingHandset):
            await rest.originate(
                cmd.endpoint,
                channel_id=cmd.attempt_id,
                app=self._app,
                app_args=["offer", cmd.call_id],
                # The core's own timer ends the offer; Asterisk's is a backstop.
                timeout_s=int(cmd.timeout_s) + 5,
                caller_id=_dial_caller_id(cmd.caller),
                # No variables, so no body: aiohttp then writes the request
                # at once instead of from a body-writer task a loop turn later.
            )
        elif isinstance(cmd, (core.CancelRing, core.ReleaseHandset)):
            await self._ignoring(rest.hangup(cmd.attempt_id), ari.AriNotFound)
        elif isinstance(cmd, core.ConnectCall):
            bridge, attempt = ids.bridge_id(cmd.call_id), cmd.attempt_id
            await self._on_call_bridge(cmd.call_id, lambda: rest.add_channel(bridge, [attempt]))
        elif isinstance(cmd, core.EndCall):
            await self._ignoring(rest.hangup(cmd.call_id), ari.AriNotFound)
            await self._ignoring(rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)
        elif isinstance(cmd, core.RedirectCaller):
            await rest.set_variable(cmd.call_id, "SIAGA_OVERFLOW_DIAL", cmd.dial)
            await rest.set_variable(cmd.call_id, VAR_RECORDING_KIND, "handback")
            await rest.continue_in_dialplan(cmd.call_id, "siaga-overflow", "s", 1)
            await self._ignoring(rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)
        else:
            raise TypeError(f"not an ARI command: {type(cmd).__name__}")

    async def hand_back(self, call_id: str) -> None:
        """Send a waiting caller to the dialplan fallback (graceful stop)."""
        # The fallback's recording is then named siaga-handback-*: the call has
        # its incident already (adapters.fallback). Best effort: the caller
        # reaching a taker matters more than the file's name.
        with contextlib.suppress(ari.AriError):
            await self._rest.set_variable(call_id, VAR_RECORDING_KIND, "handback")
        await self._rest.continue_in_dialplan(call_id, "siaga-fallback", "s", 1)
        await self._ignoring(self._rest.destroy_bridge(ids.bridge_id(call_id)), ari.AriNotFound)

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        """Return a feature-code call to the dialplan, which confirms it."""
        await self._rest.set_variable(channel_id, "SIAGA_FEATURE_RESULT", "ok" if ok else "failed")
        await self._rest.request("POST", f"/channels/{channel_id}/continue")


ARI_COMMANDS = (
    core.AnswerCaller,
    core.PlayPrompt,
    core.StopPrompt,
    core.StartHold,
    core.StopHold,
    core.RingHandset,
    core.CancelRing,
    core.ReleaseHandset,
    core.ConnectCall,
    core.EndCall,
    core.RedirectCaller,
)


def ringback_id(call_id: str) -> str:
    return f"{call_id}-ringback"
