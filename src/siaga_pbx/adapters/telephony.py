"""Carries out both cores' telephony commands with ARI REST calls.

``AriTelephony.run`` looks the command's type up in one table
(``_HANDLERS``): a command is declared once, in its core's ``Command`` union,
and handled once, here. The service runs each command in its call's lane and
turns an exception into ``CommandFailed`` / ``PartyCommandFailed``.

Idempotence: every REST call that may be repeated after a restart or a retry
treats "already exists" (409) and "already gone" (404) as done.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import structlog

from .. import ari, conference, core, ids
from ..config import PromptSettings

log = structlog.get_logger(__name__)

# Waits before answering a caller again when Asterisk did not reply in time.
_ANSWER_RETRIES = (0.2, 0.5)

_TONES: Mapping[conference.Tone, list[str]] = {
    conference.Tone.JOINED: ["sound:siaga/joined"],
    conference.Tone.LEFT: ["sound:siaga/left"],
    conference.Tone.FAILED: ["sound:siaga/left", "sound:siaga/left", "sound:siaga/left"],
}

_C = TypeVar("_C")
Handler = Callable[["AriTelephony", Any], Awaitable[None]]
_HANDLERS: dict[type, Handler] = {}


def _handles(*types: type[_C]) -> Callable[[Callable[[AriTelephony, _C], Awaitable[None]]], Any]:
    def register(fn: Callable[[AriTelephony, _C], Awaitable[None]]) -> Any:
        for t in types:
            if t in _HANDLERS:
                raise TypeError(f"{t.__name__} has two handlers")
            _HANDLERS[t] = fn
        return fn

    return register


def handled_types() -> frozenset[type]:
    """Every command type this adapter carries out (a test compares it with
    the service's telephony commands)."""
    return frozenset(_HANDLERS)


def dial_caller_id(caller: core.CallerIdentity) -> str:
    """A caller id string for the handset's display, safe to embed."""
    name = "".join(ch for ch in caller.name if ch not in '"<>\\')[:40]
    number = caller.best_number or "unknown"
    return f'"{name}" <{number}>' if name else f"<{number}>"


async def _ignoring(coro: Awaitable[object], *errors: type[Exception]) -> None:
    """Await ``coro``; the given errors mean "already done" (see the module doc)."""
    with contextlib.suppress(*errors):
        await coro


class AriTelephony:
    """The service's ``Telephony``: Asterisk over ARI REST. Raises on failure."""

    def __init__(
        self,
        rest: ari.AriRest,
        app: str,
        prompts: PromptSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.rest = rest
        self.app = app
        self.language = prompts.language
        self.clock = clock
        self._prompts = prompts

    async def run(self, cmd: object) -> None:
        handler = _HANDLERS.get(type(cmd))
        if handler is None:
            raise TypeError(f"not a telephony command: {type(cmd).__name__}")
        await handler(self, cmd)

    async def hand_back(self, call_id: str) -> None:
        """Send a waiting caller to the dialplan fallback (graceful stop, rescue)."""
        # The fallback's recording is then named siaga-handback-*: the call has
        # its incident already (adapters.fallback). Best effort: the caller
        # reaching a taker matters more than the file's name.
        with contextlib.suppress(ari.AriError):
            await self.rest.set_variable(call_id, ids.VAR_RECORDING_KIND, "handback")
        await self.rest.continue_in_dialplan(call_id, "siaga-fallback", "s", 1)
        await _ignoring(self.rest.destroy_bridge(ids.bridge_id(call_id)), ari.AriNotFound)

    async def finish_feature(self, channel_id: str, *, ok: bool) -> None:
        """Return a feature-code call to the dialplan, which confirms it."""
        await self.rest.set_variable(channel_id, ids.VAR_FEATURE_RESULT, "ok" if ok else "failed")
        await self.rest.request("POST", f"/channels/{channel_id}/continue")

    async def find_channel(self, channel_id: str) -> ari.Channel | None:
        try:
            return await self.rest.get_channel(channel_id)
        except ari.AriNotFound:
            return None

    # ---- helpers -----------------------------------------------------------

    def media(self, prompt: str) -> str:
        if prompt.startswith("position:"):
            return f"digits:{int(prompt.split(':', 1)[1])}"
        return str(getattr(self._prompts, prompt, f"sound:siaga/{prompt}"))

    async def answer(self, call_id: str) -> None:
        """Answer the caller. An overloaded Asterisk may not reply in time;
        answering twice is harmless, so a timeout or a 5xx is tried again."""
        for delay in _ANSWER_RETRIES:
            try:
                await self.rest.answer(call_id)
            except (ari.AriUnavailable, ari.AriServerError) as exc:
                log.warning("ari.answer_retry", error=str(exc)[:200], retry_in_s=delay)
                await asyncio.sleep(delay)
            else:
                return
        await self.rest.answer(call_id)

    async def ensure_call_bridge(self, call_id: str) -> None:
        """The caller in their own mixing bridge: create what is missing.
        Idempotent; a bridge made for a caller who is gone is destroyed
        again, so nothing is left behind. (The call is recorded by the
        dialplan's MixMonitor on the caller's channel, not by the bridge.)"""
        rest, bridge = self.rest, ids.bridge_id(call_id)
        try:
            await rest.create_bridge(bridge, type="mixing", name=bridge)
        except ari.AriConflict:
            if call_id in (await rest.get_bridge(bridge)).channels:
                return  # whole already
        try:
            await rest.add_channel(bridge, [call_id])
        except ari.AriError:
            await _ignoring(rest.destroy_bridge(bridge), ari.AriNotFound)
            raise

    async def on_call_bridge(self, call_id: str, op: Callable[[], Awaitable[object]]) -> None:
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
            await self.ensure_call_bridge(call_id)
            await op()

    async def play_on_bridge(self, call_id: str, media: str, playback_id: str) -> None:
        path = f"/bridges/{ids.bridge_id(call_id)}/play"
        params = {"media": media, "playbackId": playback_id, "lang": self.language}
        await self.on_call_bridge(call_id, lambda: self.rest.request("POST", path, params=params))

    async def keep_role(self, leg_id: str, role: str) -> None:
        """Write the party's role on its leg, for adoption after a restart.
        Before the join, so a leg in the bridge always says how it joined."""
        if role:
            await self.rest.set_variable(leg_id, ids.VAR_ROLE, role)


# ---- the distribution core's commands ----------------------------------------------


@_handles(core.AnswerCaller)
async def _answer_caller(t: AriTelephony, cmd: core.AnswerCaller) -> None:
    if not cmd.answered:  # the shipped dialplan answers before Stasis()
        await t.answer(cmd.call_id)
    await t.ensure_call_bridge(cmd.call_id)


@_handles(core.PlayPrompt)
async def _play_prompt(t: AriTelephony, cmd: core.PlayPrompt) -> None:
    await t.play_on_bridge(cmd.call_id, t.media(cmd.prompt), cmd.playback_id)


@_handles(core.StopPrompt)
async def _stop_prompt(t: AriTelephony, cmd: core.StopPrompt) -> None:
    await _ignoring(t.rest.stop_playback(cmd.playback_id), ari.AriNotFound)


@_handles(core.StartHold)
async def _start_hold(t: AriTelephony, cmd: core.StartHold) -> None:
    if cmd.mode is core.HoldMode.MUSIC:
        path = f"/bridges/{ids.bridge_id(cmd.call_id)}/moh"
        params = {"mohClass": cmd.music_class}
        await t.on_call_bridge(cmd.call_id, lambda: t.rest.request("POST", path, params=params))
    else:
        await t.play_on_bridge(cmd.call_id, t.media("ringback"), ids.ringback_id(cmd.call_id))


@_handles(core.StopHold)
async def _stop_hold(t: AriTelephony, cmd: core.StopHold) -> None:
    if cmd.mode is core.HoldMode.MUSIC:
        await _ignoring(
            t.rest.request("DELETE", f"/bridges/{ids.bridge_id(cmd.call_id)}/moh"),
            ari.AriNotFound,
            ari.AriConflict,
        )
    else:
        await _ignoring(t.rest.stop_playback(ids.ringback_id(cmd.call_id)), ari.AriNotFound)


@_handles(core.RingHandset)
async def _ring_handset(t: AriTelephony, cmd: core.RingHandset) -> None:
    await t.rest.originate(
        cmd.endpoint,
        channel_id=cmd.attempt_id,
        app=t.app,
        app_args=["offer", cmd.call_id],
        # The core's own timer ends the offer; Asterisk's is a backstop.
        timeout_s=int(cmd.timeout_s) + 5,
        caller_id=dial_caller_id(cmd.caller),
        # No variables, so no body: aiohttp then writes the request at once
        # instead of from a body-writer task a loop turn later.
    )


@_handles(core.CancelRing)
async def _cancel_ring(t: AriTelephony, cmd: core.CancelRing) -> None:
    await _ignoring(t.rest.hangup(cmd.attempt_id), ari.AriNotFound)


@_handles(core.ReleaseHandset)
async def _release_handset(t: AriTelephony, cmd: core.ReleaseHandset) -> None:
    await _ignoring(t.rest.hangup(cmd.attempt_id), ari.AriNotFound)


@_handles(core.ConnectCall)
async def _connect_call(t: AriTelephony, cmd: core.ConnectCall) -> None:
    bridge, attempt = ids.bridge_id(cmd.call_id), cmd.attempt_id
    await t.on_call_bridge(cmd.call_id, lambda: t.rest.add_channel(bridge, [attempt]))
    # When the taker answered, kept on the caller's channel: a restarted
    # service adopting this call counts talk time from here. Best effort
    # (the caller may be gone this instant; the call is connected already).
    with contextlib.suppress(ari.AriError):
        await t.rest.set_variable(cmd.call_id, ids.VAR_ANSWERED_AT, f"{t.clock():.3f}")


@_handles(core.EndCall)
async def _end_call(t: AriTelephony, cmd: core.EndCall) -> None:
    await _ignoring(t.rest.hangup(cmd.call_id), ari.AriNotFound)
    await _ignoring(t.rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)


@_handles(core.RedirectCaller)
async def _redirect_caller(t: AriTelephony, cmd: core.RedirectCaller) -> None:
    await t.rest.set_variable(cmd.call_id, ids.VAR_OVERFLOW_DIAL, cmd.dial)
    await t.rest.set_variable(cmd.call_id, ids.VAR_RECORDING_KIND, "handback")
    await t.rest.continue_in_dialplan(cmd.call_id, "siaga-overflow", "s", 1)
    await _ignoring(t.rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)


# ---- the conference core's commands -----------------------------------------------------


@_handles(conference.RingParty)
async def _ring_party(t: AriTelephony, cmd: conference.RingParty) -> None:
    await t.rest.originate(
        cmd.endpoint,
        channel_id=cmd.leg_id,
        app=t.app,
        app_args=["party", cmd.call_id],
        timeout_s=int(cmd.timeout_s) + 5,  # the core's timer ends the ring first
        caller_id=f'"{cmd.label}" <112>',
        variables={ids.VAR_PARTY: cmd.tag} if cmd.tag else {},
    )


@_handles(conference.CancelParty)
async def _cancel_party(t: AriTelephony, cmd: conference.CancelParty) -> None:
    await _ignoring(t.rest.hangup(cmd.leg_id), ari.AriNotFound)


@_handles(conference.BridgeParty)
async def _bridge_party(t: AriTelephony, cmd: conference.BridgeParty) -> None:
    await t.keep_role(cmd.leg_id, cmd.role)
    if cmd.muted:  # before joining: not one word of a listener reaches the call
        await t.rest.mute(cmd.leg_id, "in")
    await t.rest.add_channel(ids.bridge_id(cmd.call_id), [cmd.leg_id])


@_handles(conference.SetMuted)
async def _set_muted(t: AriTelephony, cmd: conference.SetMuted) -> None:
    await t.keep_role(cmd.leg_id, cmd.role)
    if cmd.muted:
        await t.rest.mute(cmd.leg_id, "in")
    else:
        await t.rest.unmute(cmd.leg_id, "in")


@_handles(conference.SnoopParty)
async def _snoop_party(t: AriTelephony, cmd: conference.SnoopParty) -> None:
    await t.keep_role(cmd.leg_id, cmd.role)
    await _ignoring(
        t.rest.create_bridge(cmd.snoop_id, type="mixing", name=cmd.snoop_id), ari.AriConflict
    )
    await t.rest.add_channel(cmd.snoop_id, [cmd.leg_id])
    await t.rest.snoop(
        cmd.target,
        cmd.snoop_id,
        t.app,
        spy=cmd.spy.value,
        whisper=cmd.whisper.value,
    )


@_handles(conference.BridgeSnoop)
async def _bridge_snoop(t: AriTelephony, cmd: conference.BridgeSnoop) -> None:
    await t.rest.add_channel(cmd.snoop_id, [cmd.snoop_id])


@_handles(conference.DropSnoop)
async def _drop_snoop(t: AriTelephony, cmd: conference.DropSnoop) -> None:
    await _ignoring(t.rest.hangup(cmd.snoop_id), ari.AriNotFound)
    await _ignoring(t.rest.destroy_bridge(cmd.snoop_id), ari.AriNotFound)


@_handles(conference.PlayTone)
async def _play_tone(t: AriTelephony, cmd: conference.PlayTone) -> None:
    media = _TONES[cmd.tone]
    if cmd.channel_id:
        await _ignoring(
            t.rest.play(cmd.channel_id, media, cmd.playback_id, lang=t.language),
            ari.AriNotFound,
        )
    else:
        await t.rest.request(
            "POST",
            f"/bridges/{ids.bridge_id(cmd.call_id)}/play",
            params={
                "media": ",".join(media),
                "playbackId": cmd.playback_id,
                "lang": t.language,
            },
        )


@_handles(conference.EndConference)
async def _end_conference(t: AriTelephony, cmd: conference.EndConference) -> None:
    await _ignoring(t.rest.hangup(cmd.call_id), ari.AriNotFound)
    await _ignoring(t.rest.destroy_bridge(ids.bridge_id(cmd.call_id)), ari.AriNotFound)
