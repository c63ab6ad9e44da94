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
   Conferences come back too: dispatcher and supervisor legs
   ``siaga-disp-<call>-<n>`` in the call bridge (or on a snoop bridge
   ``siaga-snoop-<call>-<n>``) describe themselves in channel variables
   (``SIAGA_PARTY``, ``SIAGA_ROLE``); a call bridge with dispatchers and no
   handset is a handed-over call, which the conference core owns again.
3. Leftovers are swept: bridges of ours whose caller is gone, handset offers
   and dispatcher legs that were ringing when we died (the cores ring again
   on request), and snoop bridges no party owns. Only objects with our
   prefix are ever touched.
"""

from __future__ import annotations

import contextlib
import math
from datetime import datetime

import structlog

from .. import ari, conference, core, ids
from ._consumer import CallService
from ._translate import EVENTS_USED, caller_identity_of

log = structlog.get_logger(__name__)


def _epoch(creationtime: datetime | None, default: float) -> float:
    return creationtime.timestamp() if creationtime is not None else default


def _answered_at(caller: ari.Channel) -> float | None:
    """When a taker answered this call, as the shell wrote it on the caller's
    channel at connect (``ids.VAR_ANSWERED_AT``): talk time then counts from
    the real answer, not from the adoption. None when absent or garbled."""
    raw = (caller.channelvars or {}).get(ids.VAR_ANSWERED_AT)
    try:
        value = float(str(raw))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _endpoint_of(channel: ari.Channel) -> str:
    """ "PJSIP/taker1-0000001a" -> "PJSIP/taker1"."""
    return channel.name.rsplit("-", 1)[0]


async def resynchronise(service: CallService, rest: ari.AriRest, app: str) -> None:
    """Reconcile the core with what Asterisk holds now (see the module doc)."""
    now = service.now()
    try:
        await rest.set_event_filter(app, EVENTS_USED)
    except ari.AriError as exc:  # an Asterisk without filters sends everything: still correct
        log.warning("recovery.event_filter_failed", error=str(exc)[:200])
    channels = {c.id: c for c in await rest.list_channels()}
    all_bridges = await rest.list_bridges()
    bridges = {b.id: b for b in all_bridges if ids.call_id_from_bridge(b.id)}
    snoops = {b.id: b for b in all_bridges if ids.is_snoop(b.id)}
    in_app = set((await rest.get_application(app)).channel_ids)
    await _subscribe_takers(service, rest, app)
    lost = await _feed_what_was_lost(service, channels, in_app)
    lost += await _feed_conference_losses(service, channels, in_app)
    _report_lost(lost)
    adopted = 0
    for arrived_at, call_id, bridge in await _to_adopt(service, rest, channels, bridges, in_app):
        await _adopt(
            service,
            rest,
            channels,
            snoops,
            call_id=call_id,
            bridge=bridge,
            arrived_at=arrived_at,
            now=now,
        )
        adopted += 1
    await _sweep_unowned(service, rest, channels, snoops)
    await service.run_commands(service.distributor.resume(now))
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
    return lost


async def _feed_conference_losses(
    service: CallService, channels: dict[str, ari.Channel], in_app: set[str]
) -> int:
    """The same for the conference core (after a websocket gap): legs that
    answered or went, and handed-over callers who hung up, while we were away."""
    confs = service.conferences
    lost = 0
    # Callers first: a handed-over call whose caller is gone ends here, before
    # its dispatchers' departures could send it back to the queue.
    for call_id in sorted(confs.live_calls() - service.distributor.known_calls()):
        if call_id not in channels:  # a handed-over call: its end is the conference's
            lost += 1
            await service.feed_conference(conference.CallerLeft(call_id, cause=0))
    for leg in sorted(confs.legs()):
        chan = channels.get(leg)
        if chan is None:
            await service.feed_conference(conference.PartyGone(leg, cause=0))
        elif chan.state == "Up" and leg in in_app:
            await service.feed_conference(conference.PartyAnswered(leg))  # ignored if joined
    return lost


def _report_lost(lost: int) -> None:
    if lost:
        log.warning(
            "recovery.state_lost",
            lost=lost,
            hint="calls ended while we were disconnected, or Asterisk restarted",
        )


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
    known |= service.conferences.live_calls()  # handed-over calls are the conference core's
    now = service.now()
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
    rest: ari.AriRest,
    channels: dict[str, ari.Channel],
    snoops: dict[str, ari.Bridge],
    *,
    call_id: str,
    bridge: ari.Bridge | None,
    arrived_at: float,
    now: float,
) -> None:
    d = service.distributor
    who = caller_identity_of(channels[call_id])
    if bridge is None:
        await service.feed(core.CallerArrived(call_id, who, d.default_queue, recovered=True))
        return
    handsets = [c for c in bridge.channels if ids.parse_offer_id(c) and c in channels]
    # Attempt numbers already used for this call, so new offers get new ids.
    used = max(
        (p[1] for c in channels if (p := ids.parse_offer_id(c)) and p[0] == call_id), default=0
    )
    taker_id = service.taker_for(_endpoint_of(channels[handsets[0]])) if handsets else None
    parties = await _parties(rest, channels, snoops, call_id, bridge)
    with structlog.contextvars.bound_contextvars(
        call_id=call_id, incident_id=service.journal_recovered(call_id, who, arrived_at)
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
                answered_at=_answered_at(channels[call_id]),
            )
            log.info("recovery.adopted_connected", taker_id=taker_id)
            await service.run_commands(cmds)
            await service.adopt_conference(
                call_id,
                taker_channel=handsets[0],
                taker_id=taker_id,
                parties=parties,
                offers_made=used,
            )
        elif parties:
            # Dispatchers and no handset: the taker had handed the call over.
            # (If none of them talks, the conference core queues the caller.)
            await service.adopt_conference(
                call_id, taker_channel=None, taker_id="", parties=parties, offers_made=used
            )
        else:
            cmds = d.adopt_waiting_caller(
                call_id,
                caller=who,
                queue=d.default_queue,
                arrived_at=arrived_at,
                now=now,
                offers_made=used,
            )
            log.info("recovery.adopted_waiting")
            await service.run_commands(cmds)


async def _parties(
    rest: ari.AriRest,
    channels: dict[str, ari.Channel],
    snoops: dict[str, ari.Bridge],
    call_id: str,
    bridge: ari.Bridge,
) -> list[conference.AdoptedParty]:
    """The answered parties of a call: legs in its bridge or on its snoop
    bridges, as their own channel variables describe them. A leg that cannot
    say who it is is left out (and swept)."""
    places: list[tuple[str, str | None]] = [
        (c, None) for c in bridge.channels if ids.is_leg_of(c, call_id)
    ]
    for snoop in snoops.values():
        if ids.is_snoop_of(snoop.id, call_id):
            places += [(c, snoop.id) for c in snoop.channels if ids.is_leg_of(c, call_id)]
    parties: list[conference.AdoptedParty] = []
    for leg, snoop_id in places:
        if leg not in channels:
            continue
        try:
            party = await rest.get_variable(leg, "SIAGA_PARTY")
            role = await rest.get_variable(leg, "SIAGA_ROLE")
            parties.append(
                conference.AdoptedParty.from_tags(
                    leg, _endpoint_of(channels[leg]), party, role, snoop_id
                )
            )
        except (ari.AriError, ValueError) as exc:
            log.warning("recovery.party_unreadable", leg_id=leg, error=str(exc)[:200])
    return parties


async def _sweep_unowned(
    service: CallService,
    rest: ari.AriRest,
    channels: dict[str, ari.Channel],
    snoops: dict[str, ari.Bridge],
) -> None:
    """Hang up offers and dispatcher legs no core owns (they were ringing
    when we died, or could not be adopted); take down snoop bridges no party
    sits on."""
    d = service.distributor
    owned = set(d.live_offers()) | set(d.connected_attempts())
    owned |= set(service.conferences.legs())
    owned_snoops = service.conferences.snoops()
    for chan_id in channels:
        if chan_id in owned:
            continue
        if ids.parse_offer_id(chan_id) or ids.is_leg(chan_id):
            with contextlib.suppress(ari.AriNotFound):
                await rest.hangup(chan_id)
                log.info("recovery.swept_channel", channel_id=chan_id)
    for snoop in snoops.values():
        if snoop.id in owned_snoops:
            continue
        for chan_id in snoop.channels:
            if ids.is_ours(chan_id):
                with contextlib.suppress(ari.AriNotFound):
                    await rest.hangup(chan_id)
        with contextlib.suppress(ari.AriNotFound):
            await rest.destroy_bridge(snoop.id)
            log.info("recovery.swept_bridge", bridge_id=snoop.id)


async def _sweep_bridge(rest: ari.AriRest, bridge: ari.Bridge) -> None:
    for chan_id in bridge.channels:
        if ids.parse_offer_id(chan_id):
            with contextlib.suppress(ari.AriNotFound):
                await rest.hangup(chan_id)
    with contextlib.suppress(ari.AriNotFound):
        await rest.destroy_bridge(bridge.id)
        log.info("recovery.swept_bridge", bridge_id=bridge.id)


async def _subscribe_takers(service: CallService, rest: ari.AriRest, app: str) -> None:
    """Follow every handset's device state; feed the current state once.

    The subscription is to the handset's *device state* (``deviceState:``),
    not to its endpoint: an endpoint subscription forwards every message of
    every channel on that endpoint to our app (each handset channel's events
    twice, plus an endpoint snapshot per channel added or removed), which
    Asterisk serialises to JSON in the app's single task queue. Device state
    is a few small messages per call."""
    for endpoint in service.takers.endpoints():
        tech, _, resource = endpoint.partition("/")
        try:
            ep = await rest.get_endpoint(tech, resource)
            held = await rest.subscribe(app, f"deviceState:{tech}/{resource}")
            await _drop_endpoint_subscription(rest, app, endpoint, held)
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
    # "endpoint:" with no name: the state and contact-status messages of every
    # endpoint, and (unlike one endpoint's subscription) none of its channels'.
    # ContactStatusChange is how a handset that vanished mid-call is found
    # (service._handsets); the caller's trunk is never qualified. A refusal
    # costs that detection only, never the resync (calls matter more); a
    # timeout or 5xx fails the resync, which is retried.
    try:
        await rest.subscribe(app, "endpoint:")
    except (ari.AriNotFound, ari.AriBadRequest) as exc:
        log.error(  # noqa: TRY400 - not a bug of ours: Asterisk refused
            "recovery.contact_status_unavailable",
            error=str(exc)[:200],
            hint="a handset that vanishes mid-call will not be noticed (docs/HANDSETS.md)",
        )


async def _drop_endpoint_subscription(
    rest: ari.AriRest, app: str, endpoint: str, held: ari.Application
) -> None:
    """An Asterisk that ran an earlier version keeps its endpoint subscriptions
    (one per connect: each DELETE drops one); drop them, within reason."""
    for _ in range(16):
        if endpoint not in held.endpoint_ids:
            return
        held = await rest.unsubscribe(app, f"endpoint:{endpoint}")
