"""The real service's /metrics on real Asterisk: a sipp caller waits while another is on a call.

The scrape is checked two ways: Debian's ``promtool check metrics`` must accept it
(a missing promtool fails the test), and the values must be the live truth: the
waiting caller is counted, its wait lies between the waits /api/state showed just
before and just after the scrape, and the abandon is observed under its queue.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import AsteriskInstance, SippRunner
from harness.checks import wait_clean
from harness.service import TOKEN, ServiceFactory, ServiceProcess

CONNECTED = "0811000101"
WAITING = "0811000102"


def config() -> dict[str, str]:
    """One queue and one call taker: a second caller must wait for the first to finish."""
    queues = [{"name": "main", "strategy": "linear", "ring_timeout_s": 10.0}]
    takers = [{"id": "taker1", "endpoint": "PJSIP/taker1", "queues": ["main"]}]
    return {"SIAGA_QUEUES": json.dumps(queues), "SIAGA_TAKERS": json.dumps(takers)}


def scrape(svc: ServiceProcess) -> str:
    """GET /metrics of the running service."""
    req = urllib.request.Request(svc.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        return str(resp.read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape, by name and label set."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value; a missing sample fails the test with the names that exist."""
    key = (name, frozenset(labels.items()))
    assert key in found, f"{name}{labels} not scraped; have {sorted({n for n, _ in found})}"
    return found[key]


def waiting_s(snap: dict[str, Any], number: str) -> float:
    """How long ``number`` has waited, from /api/state."""
    waits = [w["wait_s"] for q in snap["queues"] for w in q["waiting"] if w["number"] == number]
    assert len(waits) == 1, snap
    return float(waits[0])


def promtool_check(text: str) -> None:
    """`promtool check metrics` accepts the scrape (promtool missing: the test fails)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package (scripts/system-deps.sh)"
        )
    proc = subprocess.run(
        [promtool, "check", "metrics"],
        check=False,
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


class TestLiveMetrics:
    def test_scrape_with_a_waiting_caller_is_valid_and_true(
        self, service: ServiceFactory, sipp: SippRunner, asterisk_instance: AsteriskInstance
    ) -> None:
        """With one call connected and one caller waiting, /metrics passes promtool and reads
        1 waiting, the caller's real wait, the taker on_call; the abandon lands under main."""
        svc = service(extra=config())
        handset = sipp.handset(5071, ring_s=0.3, hangup="wait", timeout_s=60)
        first = sipp.caller(from_user=CONNECTED, talk_s=14.0, name="connected", timeout_s=60)
        svc.wait_state(
            lambda s: [c["number"] for q in s["queues"] for c in q["connected"]] == [CONNECTED],
            8,
            "first call connected",
        )
        second = sipp.caller(from_user=WAITING, talk_s=7.0, name="waiting", timeout_s=60)
        svc.wait_state(
            lambda s: any(
                w["number"] == WAITING and w["wait_s"] >= 3.0
                for q in s["queues"]
                for w in q["waiting"]
            ),
            8,
            "second caller waiting 3 s",
        )
        before = waiting_s(svc.state(), WAITING)
        text = scrape(svc)
        after = waiting_s(svc.state(), WAITING)

        promtool_check(text)
        found = samples(text)
        assert value(found, "siaga_callers_waiting", queue="main") == 1.0
        assert before <= value(found, "siaga_oldest_wait_seconds", queue="main") <= after
        assert value(found, "siaga_takers", status="on_call") == 1.0
        assert value(found, "siaga_takers", status="available") == 0.0
        assert value(found, "siaga_calls_arrived_total", queue="main") == 2.0
        assert value(found, "siaga_calls_answered_total", queue="main") == 1.0
        assert value(found, "siaga_core_handle_seconds_count") >= 4.0  # arrivals, ring, answer
        assert value(found, "siaga_ari_reconnects_total") == 0.0
        assert value(found, "process_resident_memory_bytes") > 10_000_000
        assert value(found, "process_open_fds") > 3.0

        # The waiting caller hangs up (7 s after Asterisk answered it): an abandon in main.
        second.wait().assert_ok()
        abandoned_at = time.monotonic()
        deadline = abandoned_at + 5.0
        while True:
            found = samples(scrape(svc))
            if found.get(("siaga_calls_abandoned_total", frozenset({("queue", "main")}))):
                break
            assert time.monotonic() < deadline, "abandon never counted"
            time.sleep(0.1)
        assert value(found, "siaga_abandon_wait_seconds_count", queue="main") == 1.0
        assert 5.0 <= value(found, "siaga_abandon_wait_seconds_sum", queue="main") <= 9.0
        assert value(found, "siaga_callers_waiting", queue="main") == 0.0
        assert value(found, "siaga_oldest_wait_seconds", queue="main") == 0.0
        assert value(found, "siaga_callbacks_pending") == 1.0

        first.wait().assert_ok()
        handset.wait().assert_ok()
        wait_clean(asterisk_instance)
