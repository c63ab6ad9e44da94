"""Rebuild the core's state from Asterisk after a (re)connect.

ARI drops events while our websocket is down and never replays them, but the
calls go on in Asterisk: channels already in our Stasis app stay there, and
the bridges we made stay until we destroy them. So on every connection we ask
Asterisk what it holds and reconcile:

1. What the core knows and Asterisk no longer has (the caller or handset hung
   up during the gap, or Asterisk itself restarted) is fed to the core as the
   hangup it missed, and reported as lost state.
2. What Asterisk has and the core does not (after our own restart) is adopted:
   a call bridge ``siaga-call-X`` with a handset in it is a connected call;
   with the caller alone it is a waiting caller. Callers are adopted in order
   of arrival (channel creation time), so the queue keeps its order.
3. Leftovers are swept: bridges of ours whose caller is gone, and handset
   offers that were ringing when we died (the core rings again). Only objects
   with our prefix are ever touched.
"""

from __future__ import annotations

import time
from datetime import datetime

import structlog

from . import ari, core, ids
from .adapters.ari import VAR_FROM, VAR_PAI, caller_identity_of
from .service import CallService

log = structlog.get_logger(__name__)


def _epoch(creationtime: datetime | None, default: float) -> float:
    return creationtime.timestamp() if creationtime is not None else default


def _endpoint_of(channel: ari.Channel) -> str:
    """ "PJSIP/taker1-0000001a" -> "PJSIP/taker1"."""
    return channel.name.rsplit("-", 1)[0]


async def resynchronise(service: CallService, rest: ari.AriRest, app: str) -> None:
    now = time.time()
    d = service.distributor
    channels = {c.id: c for c in await rest.list_channels()}
    bridges = {b.id: b for b in await rest.list_bridges() if ids.call_id_from_bridge(b.id)}
    in_app = set((await rest.get_application(app)).channel_ids)
    await _subscribe_takers(service, rest, app)

    # 1. What the core knows and Asterisk lost.
    lost = 0
    for attempt_id, call_id in d.live_offers().items():
        chan = channels.get(attempt_id)
        if chan is None:
            await service.feed(core.HandsetFailed(attempt_id, core.HandsetFailure.UNREACHABLE))
        elif chan.state == "Up" and attempt_id in in_app and not d.is_connected(attempt_id):
            await service.feed(core.HandsetAnswered(attempt_id))  # StasisStart was lost
    for attempt_id in d.connected_attempts():
        if attempt_id not in channels:
            lost += 1
            await service.feed(core.HandsetHungUp(attempt_id, cause=0))
    for call_id in d.known_calls():
        if call_id not in channels:
            lost += 1
            await service.feed(core.CallerHungUp(call_id, cause=0))
    if lost:
        log.warning(
            "recovery.state_lost",
            lost=lost,
            hint="calls ended while we were disconnected, or Asterisk restarted",
        )

    # 2. What Asterisk has and the core does not: adopt in order of arrival.
    known = d.known_calls()
    adopt: list[tuple[float, str, ari.Bridge | None]] = []
    for bridge in bridges.values():
        call_id = ids.call_id_from_bridge(bridge.id) or ""
        caller = channels.get(call_id)
        if caller is None or call_id not in in_app:
            await _sweep_bridge(rest, bridge)
            continue
        if call_id not in known:
            adopt.append((_epoch(caller.creationtime, now), call_id, bridge))
    for chan_id in in_app:
        chan = channels.get(chan_id)
        if chan is None or ids.is_ours(chan_id) or chan_id in known:
            continue
        if ids.bridge_id(chan_id) not in bridges and ids.is_safe_id(chan_id):
            # In our app but never bridged: we died between StasisStart and
            # AnswerCaller. Treat it as the arrival we did not finish.
            adopt.append((_epoch(chan.creationtime, now), chan_id, None))
    adopt.sort()
    adopted = 0
    for arrived_at, call_id, bridge in adopt:
        chan = channels[call_id]
        who = caller_identity_of(chan)
        if bridge is None:
            await service.feed(core.CallerArrived(call_id, who, d.default_queue))
            adopted += 1
            continue
        handsets = [c for c in bridge.channels if ids.parse_offer_id(c) and c in channels]
        offers_made = (
            max(
                (ids.parse_offer_id(c) or ("", 0))[1]
                for c in [*bridge.channels, *channels]
                if (ids.parse_offer_id(c) or ("",))[0] == call_id
            )
            if handsets
            else 0
        )
        taker_id = service.taker_for(_endpoint_of(channels[handsets[0]])) if handsets else None
        with structlog.contextvars.bound_contextvars(call_id=call_id):
            if handsets and taker_id is not None:
                cmds = d.adopt_connected_call(
                    call_id, who, d.default_queue, arrived_at, handsets[0], taker_id, now
                )
                log.info("recovery.adopted_connected", taker_id=taker_id)
            else:
                cmds = d.adopt_waiting_caller(
                    call_id, who, d.default_queue, arrived_at, now, offers_made=offers_made
                )
                log.info("recovery.adopted_waiting")
        service.remember_call(call_id)
        await service.run_commands(cmds)
        adopted += 1

    # 3. Offers of ours that no core offer owns: ringing when we died.
    owned = set(d.live_offers()) | set(d.connected_attempts())
    for chan_id in channels:
        if ids.parse_offer_id(chan_id) and chan_id not in owned:
            try:
                await rest.hangup(chan_id)
            except ari.AriNotFound:
                pass
    await service.run_commands(d.resume(now))
    log.info(
        "recovery.done", channels=len(channels), bridges=len(bridges), adopted=adopted, lost=lost
    )


async def _sweep_bridge(rest: ari.AriRest, bridge: ari.Bridge) -> None:
    for chan_id in bridge.channels:
        if ids.parse_offer_id(chan_id):
            try:
                await rest.hangup(chan_id)
            except ari.AriNotFound:
                pass
    try:
        await rest.destroy_bridge(bridge.id)
        log.info("recovery.swept_bridge", bridge_id=bridge.id)
    except ari.AriNotFound:
        pass


async def _subscribe_takers(service: CallService, rest: ari.AriRest, app: str) -> None:
    """Follow every handset's device state; feed the current state once."""
    for endpoint in service.taker_endpoints():
        tech, _, resource = endpoint.partition("/")
        try:
            await rest.subscribe(app, f"endpoint:{tech}/{resource}")
            ep = await rest.get_endpoint(tech, resource)
        except ari.AriNotFound:
            log.error(
                "recovery.unknown_endpoint",
                endpoint=endpoint,
                hint="taker endpoint is not configured in pjsip.conf",
            )
            continue
        taker = service.taker_for(endpoint)
        if taker is not None:
            in_use = any(ids.parse_offer_id(c) is None for c in ep.channel_ids)
            await service.feed(
                core.TakerDeviceChanged(taker, reachable=ep.state != "offline", in_use=in_use)
            )


__all__ = ["VAR_FROM", "VAR_PAI", "resynchronise"]
