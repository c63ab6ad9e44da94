"""Per-call outcomes and latency statistics of one run."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .sipp import Logs


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary_ms(values_s: list[float]) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds."""
    ms = [v * 1000.0 for v in values_s]
    out: dict[str, float | None] = {}
    for name, q in (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)):
        v = percentile(ms, q)
        out[name] = None if v is None else round(v, 1)
    return out


@dataclass
class Outcomes:
    """Every call of a run judged on its own (not sipp's summary counters)."""

    attempted: int = 0
    connected: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    answer_s: list[float] = field(default_factory=list)  # caller INVITE -> its 200 OK
    ring_s: list[float] = field(default_factory=list)  # caller INVITE -> handset INVITE
    handset_up_s: list[float] = field(default_factory=list)  # caller INVITE -> handset ACK
    extra_offers: int = 0  # handset INVITEs beyond the first for one call
    handsets_used: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "connected": self.connected,
            "failed": self.failed,
            "failure_reasons": dict(self.reasons.most_common()),
            "answer_ms": summary_ms(self.answer_s),
            "ring_ms": summary_ms(self.ring_s),
            "handset_up_ms": summary_ms(self.handset_up_s),
            "extra_offers": self.extra_offers,
            "handsets_used": self.handsets_used,
        }


def judge(logs: Logs, expected_calls: int) -> Outcomes:
    """Connected = the caller got its 200 OK, exactly the handset that rang for this caller's
    number answered (its 200 was ACKed) and hung up after its full talk time (BYE from the
    handset, "end local"), and the PBX then released the caller (BYE to the caller, "end
    remote"). Anything else is a failure with a reason. Calls sipp never started count as
    failed too ("not started")."""
    out = Outcomes(attempted=max(expected_calls, len(logs.callers)))
    used: set[str] = set()
    for number, c in logs.callers.items():
        offers = logs.handsets.get(number, [])
        out.extra_offers += max(0, len(offers) - 1)
        answered = [h for h in offers if h.ack is not None]
        reason: str | None = None
        if c.rejected is not None:
            reason = f"rejected {c.rejected}"
        elif c.ok is None:
            reason = "caller not answered"
        elif not offers:
            reason = "no handset rang"
        elif not answered:
            reason = "handset answer not acknowledged"
        elif answered[-1].end != "local":
            reason = f"handset call ended {answered[-1].end or 'never'}"
        elif c.end != "remote":
            reason = f"caller not released ({c.end or 'no end'})"
        if c.ok is not None:
            out.answer_s.append(c.ok - c.invite)
        if offers:
            out.ring_s.append(offers[0].ring - c.invite)
        if answered and answered[0].ack is not None:
            out.handset_up_s.append(answered[0].ack - c.invite)
        for h in offers:
            used.add(h.handset)
        if reason is None:
            out.connected += 1
        else:
            out.reasons[reason] += 1
    missing = out.attempted - len(logs.callers)
    if missing > 0:
        out.reasons["not started"] += missing
    out.failed = out.attempted - out.connected
    out.handsets_used = len(used)
    return out
