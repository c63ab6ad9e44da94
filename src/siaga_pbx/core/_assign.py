"""The pure assignment step: waiting callers -> free call takers.

Like httpcore's ``_assign_requests_to_connections``, ``assign_offers`` only
*decides*; it changes nothing. The engine applies the offers it returns
(rings the handsets, moves the takers to RINGING, remembers rrmemory).

Rules:
- Callers are walked in service order (``Caller.order_key``); each free
  taker goes to the first caller, in that order, whose queue the taker serves.
  So within one queue and priority nobody is overtaken.
- A caller with a live offer gets no second one, except under ``ringall``,
  where a ringing caller also rings takers who became free meanwhile.
- A caller in its retry delay (``not_before``) is skipped.
- Takers who missed this caller in the current round (``tried``) are skipped
  while other free takers remain; when only tried takers are free and the
  caller rings nobody, a new round starts (``reset_tried``). A caller is
  therefore never left waiting while a taker of its queue is free.
- The queue's strategy picks among the candidates; candidates are given in
  configuration order, which breaks every tie.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ._callers import Caller
from ._config import QueueConfig, Strategy
from ._takers import Taker


@dataclass(frozen=True, slots=True)
class Offer:
    call_id: str
    taker_ids: tuple[str, ...]
    reset_tried: bool  # this offer starts a new round for the caller


def pick(
    strategy: Strategy,
    candidates: Sequence[Taker],
    members: Callable[[], Sequence[str]],
    last_rung: str | None,
    rng: random.Random,
) -> list[Taker]:
    """Choose whom to ring among ``candidates`` (non-empty, in config order).

    ``members()`` gives the queue's takers in config order (only rrmemory
    needs it, so it is built only then), and ``last_rung`` is the taker the
    queue rang last.
    """
    match strategy:
        case Strategy.RINGALL:
            return list(candidates)
        case Strategy.LINEAR:
            return [candidates[0]]
        case Strategy.LEASTRECENT:
            return [min(candidates, key=lambda t: t.last_call_end)]
        case Strategy.FEWESTCALLS:
            return [min(candidates, key=lambda t: t.calls_taken)]
        case Strategy.RANDOM:
            return [rng.choice(candidates)]
        case Strategy.RRMEMORY:
            order = members()
            start = order.index(last_rung) + 1 if last_rung in order else 0
            rotation = {tid: (i - start) % len(order) for i, tid in enumerate(order)}
            return [min(candidates, key=lambda t: rotation.get(t.taker_id, len(order)))]


def assign_offers(
    callers: Iterable[Caller],
    takers: Sequence[Taker],
    *,
    queues: Mapping[str, QueueConfig],
    rr_memory: Mapping[str, str],
    rng: random.Random,
    now: float,
) -> list[Offer]:
    """Match waiting callers (any order; sorted here) with offerable takers."""
    # Runs after every event: most callers are connected or in their retry
    # delay, so they are dropped before the sort, and nothing else is done
    # when nobody is left to serve.
    ready = [c for c in callers if c.attempt_id is None and now >= c.not_before]
    if not ready:
        return []
    free = [t for t in takers if t.offerable]
    claimed: set[str] = set()
    memory = dict(rr_memory)
    offers: list[Offer] = []
    for caller in sorted(ready, key=lambda c: c.order_key):
        if not free or len(claimed) == len(free):
            break
        queue = queues.get(caller.queue)
        if queue is None:
            continue
        ringall = queue.strategy is Strategy.RINGALL
        if caller.offers and not ringall:
            continue
        # One pass over the free takers: those serving this queue, and of
        # them those not yet tried in this round (this runs after every event).
        serving: list[Taker] = []
        candidates: list[Taker] = []
        for t in free:
            if caller.queue in t.config.queues and t.taker_id not in claimed:
                serving.append(t)
                if t.taker_id not in caller.tried:
                    candidates.append(t)
        if not serving:
            continue
        reset = False
        if not candidates:
            if caller.offers:  # ringall, still ringing: the round is not over
                continue
            candidates, reset = serving, True

        def members(name: str = caller.queue) -> list[str]:
            return [t.taker_id for t in takers if name in t.config.queues]

        chosen = pick(queue.strategy, candidates, members, memory.get(caller.queue), rng)
        claimed.update(t.taker_id for t in chosen)
        memory[caller.queue] = chosen[-1].taker_id
        offers.append(Offer(caller.call_id, tuple(t.taker_id for t in chosen), reset))
    return offers
