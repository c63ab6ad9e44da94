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

import contextlib
import time
from datetime import datetime

import structlog

from . import ari, core, ids
from .adapters.ari import caller_identity_of
from .service import CallService

log = structlog.get_logger(__name__)


def _epoch(creationtime: datetime | None, default: float) -> float:
    return creationtime.timestamp() if creationtime is not None else default


def _endpoint_of(channel: ari.Channel) -> str:
    """ "PJSIP/taker1-0000001a" -> "PJSIP/taker1"."""
    return channel.name.rsplit("-", 1)[0]


async def resynchronise(service: CallService, rest: ari.AriRest, app: str) -> None:
    """Reconcile the core with what Asterisk holds now (see the module doc)."""
    now = time.time()
    channels = {c.id: c for c in await rest.list_channels()}
    bridges = {b.id: b for b in await rest.list_bridges() if ids.call_id_from_bridge(b.id)}
    in_app = set((await rest.get_application(app)).channel_ids)
    await _subscribe_takers(service, rest, app)
    lost = await _feed_what_was_lost(service, channels, in_app)
    adopted = 0
    for arrived_at, call_id, bridge in await _to_adopt(service, rest, channels, bridges, in_app):
        await _adopt(service, channels, call_id, bridge, arrived_at=arrived_at, now=now)
        adopted += 1
    # Offers of ours that no core offer owns were ringing when we died.
    d = service.distributor
    owned = set(d.live_offers()) | set(d.connected_attempts())
    for chan_id in channels:
        if ids.parse_offer_id(chan_id) and chan_id not in owned:
            with contextlib.suppress(ari.AriNotFound):
                await rest.hangup(chan_id)
    await service.run_commands(d.resume(now))
    log.info(
        "recovery.done", channels=len(channels), bridges=len(bridges), adopted=adopted, lost=lost
    )


async def _feed_what_was_lost(
    service: CallService, channels: dict[str, ari.Channel], in_app: set[str]
) -> int:
    """Tell the core what happened while no events reached us; count lost calls."""
    d = service.distributor
    lost = 0
    for attempt_id in d.live_offers():
        chan = channels.get(attempt_id)
        if chan is None:
            await service.feed(core.HandsetFailed(attempt_id, core.HandsetFailure.UNREACHABLE))
        elif chan.state == "Up" and attempt_id in in_app:
            await service.feed(core.HandsetAnswered(attempt_id))  # its StasisStart was lost
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
    return lost


async def _to_adopt(
    service: CallService,
    rest: ari.AriRest,
    channels: dict[str, ari.Channel],
    bridges: dict[str, ari.Bridge],
    in_app: set[str],
) -> list[tuple[float, str, ari.Bridge | None]]:
    """Callers Asterisk holds that the core does not, in order of arrival;
    sweeps our bridges whose caller is gone on the way."""
    known = service.distributor.known_calls()
    now = time.time()
    adopt: list[tuple[float, str, ari.Bridge | None]] = []
    for found in bridges.values():
        call_id = ids.call_id_from_bridge(found.id) or ""
        caller = channels.get(call_id)
        if caller is None or call_id not in in_app:
            await _sweep_bridge(rest, found)
        elif call_id not in known:
            adopt.append((_epoch(caller.creationtime, now), call_id, found))
    for chan_id in in_app:
        chan = channels.get(chan_id)
        if chan is None or ids.is_ours(chan_id) or chan_id in known:
            continue
        if ids.bridge_id(chan_id) not in bridges and ids.is_safe_id(chan_id):
            # In our app but never bridged: we died between StasisStart and
            # AnswerCaller. Treat it as the arrival we did not finish.
            adopt.append((_epoch(chan.creationtime, now), chan_id, None))
    return sorted(adopt, key=lambda item: (item[0], item[1]))


async def _adopt(
    service: CallService,
    channels: dict[str, ari.Channel],
    call_id: str,
    bridge: ari.Bridge | None,
    *,
    arrived_at: float,
    now: float,
) -> None:
    d = service.distributor
    who = caller_identity_of(channels[call_id])
    if bridge is None:
        await service.feed(core.CallerArrived(call_id, who, d.default_queue))
        return
    handsets = [c for c in bridge.channels if ids.parse_offer_id(c) and c in channels]
    # Attempt numbers already used for this call, so new offers get new ids.
    used = [p[1] for c in channels if (p := ids.parse_offer_id(c)) and p[0] == call_id]
    taker_id = service.taker_for(_endpoint_of(channels[handsets[0]])) if handsets else None
    with structlog.contextvars.bound_contextvars(
        call_id=call_id, incident_id=service.remember_call(call_id)
    ):
        if handsets and taker_id is not None:
            cmds = d.adopt_connected_call(
                call_id,
                caller=who,
                queue=d.default_queue,
                arrived_at=arrived_at,
                attempt_id=handsets[0],
                taker_id=taker_id,
                now=now,
            )
            log.info("recovery.adopted_connected", taker_id=taker_id)
        else:
            cmds = d.adopt_waiting_caller(
                call_id,
                caller=who,
                queue=d.default_queue,
                arrived_at=arrived_at,
                now=now,
                offers_made=max(used, default=0),
            )
            log.info("recovery.adopted_waiting")
        await service.run_commands(cmds)


async def _sweep_bridge(rest: ari.AriRest, bridge: ari.Bridge) -> None:
    for chan_id in bridge.channels:
        if ids.parse_offer_id(chan_id):
            with contextlib.suppress(ari.AriNotFound):
                await rest.hangup(chan_id)
    with contextlib.suppress(ari.AriNotFound):
        await rest.destroy_bridge(bridge.id)
        log.info("recovery.swept_bridge", bridge_id=bridge.id)


async def _subscribe_takers(service: CallService, rest: ari.AriRest, app: str) -> None:
    """Follow every handset's device state; feed the current state once."""
    for endpoint in service.taker_endpoints():
        tech, _, resource = endpoint.partition("/")
        try:
            await rest.subscribe(app, f"endpoint:{tech}/{resource}")
            ep = await rest.get_endpoint(tech, resource)
        except ari.AriNotFound:
            log.error(  # noqa: TRY400 - a configuration mistake; the hint says it all
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
