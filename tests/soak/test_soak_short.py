"""Soak: many 112 calls through the whole stack (sipp -> Asterisk 22 -> service ->
outbox -> PostgreSQL) with a random mix of endings, then an exact audit.

``SIAGA_SOAK_CALLS`` sets the number of calls: ``make soak`` runs 2,000 (or
``make soak SOAK_CALLS=N``); ``make test`` runs this same test with 60.

The mix, interleaved at random by independent sipp callers at their own rates:
- 55 % wait for a call taker, who ends the call (taker hangs up first);
- 20 % hang up themselves after 2.5 s (before or after answer: both orders);
- 25 % abandon within 0.4 s (during the greeting: abandoned, callback entry).
Call takers: taker1 and taker2 answer; taker3 never answers (ring, no answer,
the offer moves on), so every call also exercises the no-answer path.

The audit at the end: every sipp call succeeded; exactly one ``calls`` row per
call, each closed, each with exactly one ``arrived``; no channel or bridge left
in Asterisk; no dead letter in the outbox; the service's RSS growth from the
first tenth of the run to the end is reported and must stay within
``RSS_BOUND_MB``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from harness import TONE_A_HZ, AsteriskInstance, SippProcess, SippRunner, make_tone
from harness.checks import db_rows, wait_clean, wait_rows
from harness.service import ServiceFactory, ServiceProcess, free_port
from harness.sipp import SCENARIO_DIR, TICK_S, _tracing, sipp_binary

CALLS = int(os.environ.get("SIAGA_SOAK_CALLS", "60"))
RATE = float(os.environ.get("SIAGA_SOAK_RATE", "2.0"))  # calls per second, all groups
RSS_BOUND_MB = 40.0  # growth allowed after warm-up, whatever the number of calls
MIX = (
    ("waits", 0.55, "wait", 60.0),
    ("hangs-up", 0.20, "bye", 2.5),
    ("abandons", 0.25, "bye", 0.4),
)


def rss_mb(svc: ServiceProcess) -> float:
    assert svc.proc is not None
    for line in Path(f"/proc/{svc.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def callers(
    sipp: SippRunner,
    name: str,
    *,
    calls: int,
    rate: float,
    hangup: str,
    talk_s: float,
    number: str,
) -> SippProcess:
    """``calls`` 112 calls from the trunk at ``rate`` per second, from one sipp."""
    wd = sipp.workdir / name
    make_tone(wd / "tone.ulaw", TONE_A_HZ, seconds=5)
    inst = sipp.instance
    bound = int(calls / rate + 240)
    args = [
        sipp_binary(),
        "-sf",
        str(SCENARIO_DIR / "caller.xml"),
        "-i",
        inst.trunk_addr,
        "-p",
        str(free_port()),
        "-mi",
        inst.trunk_addr,
        "-mp",
        str(free_port()),
        "-m",
        str(calls),
        "-r",
        f"{rate:.3f}",
        # sipp's default limit on simultaneous calls is derived from -d (unset
        # here) and comes out as 1: the group would then run one call at a time.
        "-l",
        str(calls),
        "-s",
        "112",
        "-set",
        "from_user",
        number,
        "-set",
        "from_name",
        f"Soak {name}",
        "-set",
        "pai_header",
        "X-Siaga-No-PAI: 1",
        "-set",
        "talk_ticks",
        str(max(1, round(talk_s / TICK_S))),
        "-set",
        "hangup",
        hangup,
        "-timeout",
        f"{bound}s",
        "-timeout_error",
        *_tracing(),
        inst.sip_target,
    ]
    proc = SippProcess(name, args, wd, bound).start()
    sipp.processes.append(proc)
    return proc


def test_soak(
    service: ServiceFactory,
    sipp: SippRunner,
    asterisk_instance: AsteriskInstance,
    e2e_dsn: str,
    tmp_path: Path,
) -> None:
    """N calls with random abandon, no-answer and hang-up order: nothing leaks or goes missing."""
    queue = {
        "name": "main",
        "strategy": "leastrecent",
        "ring_timeout_s": 2.0,
        "retry_delay_s": 0.2,
        "max_misses": 1_000_000,
        "reassurance_every_s": None,
    }
    takers = [
        {"id": t, "endpoint": f"PJSIP/{t}", "queues": ["main"]}
        for t in ("taker1", "taker2", "taker3")
    ]
    svc = service(
        extra={
            "SIAGA_QUEUES": json.dumps([queue]),
            "SIAGA_TAKERS": json.dumps(takers),
            "SIAGA_LOG_LEVEL": "INFO",
        }
    )
    bound = CALLS / RATE + 300
    sipp.handset(
        5071, name="taker1", ring_s=0.2, talk_s=0.6, hangup="bye", calls=CALLS * 3, timeout_s=bound
    )
    sipp.handset(
        5072, name="taker2", ring_s=0.4, talk_s=1.0, hangup="bye", calls=CALLS * 3, timeout_s=bound
    )
    sipp.handset(5073, name="taker3", mode="noanswer", calls=CALLS * 3, timeout_s=bound)
    counts = [round(CALLS * share) for _, share, _, _ in MIX]
    counts[0] += CALLS - sum(counts)
    started = time.monotonic()
    groups = [
        callers(
            sipp,
            name,
            calls=n,
            rate=RATE * share,
            hangup=hangup,
            talk_s=talk,
            number=f"08119{i:05d}",
        )
        for i, ((name, share, hangup, talk), n) in enumerate(zip(MIX, counts, strict=True))
    ]
    baseline = None
    while any(g.proc is not None and g.proc.poll() is None for g in groups):
        if baseline is None and time.monotonic() - started > 0.1 * CALLS / RATE + 5:
            baseline = rss_mb(svc)
        time.sleep(1.0)
    results = [g.wait() for g in groups]
    end_rss = rss_mb(svc)
    baseline = baseline if baseline is not None else end_rss
    for r, n in zip(results, counts, strict=True):
        assert r.successful_calls == n and r.failed_calls == 0, r.describe()
    sipp.stop_all()
    rows = wait_rows(
        e2e_dsn,
        "SELECT call_id FROM calls WHERE ended_at IS NOT NULL",
        until=lambda r: len(r) >= CALLS,
        timeout=60 + CALLS / 20,
    )
    total = db_rows(e2e_dsn, "SELECT count(*) AS n, count(DISTINCT call_id) AS d FROM calls")[0]
    arrived = db_rows(
        e2e_dsn,
        "SELECT count(*) AS n, count(DISTINCT call_id) AS d FROM timeline WHERE stage = 'arrived'",
    )[0]
    stages = {
        r["stage"]: r["n"]
        for r in db_rows(e2e_dsn, "SELECT stage, count(*) AS n FROM timeline GROUP BY stage")
    }
    with sqlite3.connect(tmp_path / "state" / "outbox.sqlite3") as db:
        dead = db.execute("SELECT count(*) FROM dead_letter").fetchone()[0]
    growth = end_rss - baseline
    print(
        f"\nsoak: {CALLS} calls in {time.monotonic() - started:.0f} s; rows {total}; "
        f"stages {stages}; service RSS {baseline:.1f} MB -> {end_rss:.1f} MB "
        f"(growth {growth:+.1f} MB, bound {RSS_BOUND_MB} MB)"
    )
    assert len(rows) == CALLS
    assert (total["n"], total["d"]) == (CALLS, CALLS), total  # none missing, none twice
    assert (arrived["n"], arrived["d"]) == (CALLS, CALLS), arrived
    assert stages.get("abandoned", 0) > 0 and stages.get("answered", 0) > 0, stages
    assert stages.get("offer_failed", 0) > 0, stages  # taker3's no-answers
    assert dead == 0
    assert growth < RSS_BOUND_MB, (baseline, end_rss)
    wait_clean(asterisk_instance, timeout=30)
