"""A handset that vanishes mid-call, on real Asterisk 22, sipp and PostgreSQL.

taker4 is the test profile's one qualified handset (an OPTIONS every 5 s,
3 s to answer), played by ``handset_alive.xml``, which answers qualify like a
real phone. SIGKILL of that sipp is a phone that dies: no BYE, no RTP, no
answer to OPTIONS. The service must notice within 10 s and treat it as a drop
(the caller back at the head of the queue, offered to a free taker), and
must never cut a handset that is alive but sends no RTP (docs/HANDSETS.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import AsteriskInstance, SippProcess, SippRunner
from harness.asterisk import INSTANCE_SCRIPT
from harness.checks import tone_strength, wait_clean, wait_rows
from harness.service import ServiceFactory, ServiceProcess

SCENARIO = Path(__file__).parent / "scenarios" / "handset_alive.xml"
TAKER4_PORT = 5074
TAKER1_HZ = 1700  # the free taker's tone, told apart from taker4's (TONE_B_HZ)
DETECT_S = 10.0  # the promise: a vanished handset is found within this
MARGIN_S = 1.5  # event delivery, the service's hop, sipp's ~100 ms ticks
N_CALLER = "0812000041"


# ---- helpers -------------------------------------------------------------------


def config(takers: tuple[str, ...], **extra: str) -> dict[str, str]:
    """Linear ring order: ``takers[0]`` is offered first."""
    q = {"name": "main", "strategy": "linear", "ring_timeout_s": 10.0, "retry_delay_s": 0.2}
    t = [{"id": tid, "endpoint": f"PJSIP/{tid}", "queues": ["main"]} for tid in takers]
    return {"SIAGA_QUEUES": json.dumps([q]), "SIAGA_TAKERS": json.dumps(t), **extra}


def alive_handset(sipp: SippRunner, *, media: str) -> SippProcess:
    """taker4's phone: answers qualify OPTIONS and one call (never hangs up itself)."""
    return sipp.handset(
        TAKER4_PORT,
        name=f"taker4-{media}",
        ring_s=0.3,
        hangup="wait",
        calls=100000,  # every OPTIONS counts as a sipp call
        timeout_s=120,
        scenario=SCENARIO,
        variables={"media": media},
    )


def wait_reachable(inst: AsteriskInstance, endpoint: str, timeout: float = 15.0) -> None:
    """Until Asterisk's qualify has found the handset's contact answering."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, ep = inst.ari("GET", f"endpoints/PJSIP/{endpoint}")
        if status == 200 and ep.get("state") == "online":
            return
        time.sleep(0.2)
    raise AssertionError(f"{endpoint} never became reachable: {inst.cli('pjsip show aors')}")


def vanish(proc: SippProcess) -> float:
    """SIGKILL the phone (by its pid): it sends nothing more, answers nothing."""
    assert proc.proc is not None and proc.proc.poll() is None, "the phone died early"
    os.kill(proc.proc.pid, signal.SIGKILL)
    proc.proc.wait(timeout=5)
    return time.time()


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``check`` every 50 ms; the wall-clock time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def connected_to(svc: ServiceProcess) -> list[str | None]:
    return [c["taker_id"] for q in svc.state()["queues"] for c in q["connected"]]


def timeline(dsn: str, until: Callable[[list[str]], bool]) -> list[dict[str, Any]]:
    return wait_rows(
        dsn,
        "SELECT stage, extract(epoch FROM at)::float8 AS at, detail FROM timeline ORDER BY id",
        until=lambda rows: until([r["stage"] for r in rows]),
    )


def of(rows: list[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["stage"] == stage]


@pytest.fixture(autouse=True)
def taker4_configured(asterisk_instance: AsteriskInstance) -> None:
    """The running test instance knows taker4 (an instance started from an
    older checkout is re-rendered from this one and its PJSIP reloaded)."""
    inst = asterisk_instance
    status, _ = inst.ari("GET", "endpoints/PJSIP/taker4")
    if status == 404:
        subprocess.run(["bash", str(INSTANCE_SCRIPT), "render", "test"], check=True, timeout=60)
        inst.cli("module reload res_pjsip.so")
        wait_for(lambda: inst.ari("GET", "endpoints/PJSIP/taker4")[0] == 200, 10, "taker4")


# ---- tests ---------------------------------------------------------------------


class TestVanishedHandset:
    def test_taker_handset_that_dies_mid_call_drops_the_caller_to_a_free_taker(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A taker's phone that dies without a BYE is found within 10 s, the caller goes
        to the head of the queue and is bridged to a free taker, the timeline says why."""
        inst = asterisk_instance
        taker4 = alive_handset(sipp, media="tone")
        wait_reachable(inst, "taker4")
        svc = service(extra=config(("taker4", "taker1")))
        taker1 = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", tone_hz=TAKER1_HZ)
        caller = sipp.caller(from_user=N_CALLER, talk_s=30.0, hangup="bye", timeout_s=90)
        wait_for(lambda: connected_to(svc) == ["taker4"], 10, "the caller bridged to taker4")
        time.sleep(2.0)  # they talk
        died_at = vanish(taker4)

        rebridged_at = wait_for(
            lambda: connected_to(svc) == ["taker1"], DETECT_S + 3, "the caller bridged to taker1"
        )
        # Found, offered to taker1, rung 0.5 s and answered: all within the promise.
        assert rebridged_at - died_at <= DETECT_S + 0.5 + MARGIN_S, rebridged_at - died_at

        caller_result = caller.wait()
        caller_result.assert_ok()
        assert caller_result.ended_by == ["local"]  # the caller was never cut
        taker1_result = taker1.wait()
        taker1_result.assert_ok()
        assert taker1_result.ended_by == ["remote"]  # talked until the caller hung up

        rows = timeline(e2e_dsn, lambda s: "hung_up" in s)
        left = of(rows, "taker_left")
        assert [r["detail"]["taker_id"] for r in left] == ["taker4"], rows
        assert left[0]["detail"]["reason"] == "handset-lost"
        assert left[0]["detail"]["evidence"] == "contact-unreachable"
        assert left[0]["at"] - died_at <= DETECT_S + MARGIN_S, left[0]["at"] - died_at
        requeued = of(rows, "requeued")
        assert [(r["detail"]["reason"], r["detail"]["at_head"]) for r in requeued] == [
            ("handset-lost", True)
        ]
        answered = of(rows, "answered")
        assert [r["detail"]["taker_id"] for r in answered] == ["taker4", "taker1"]
        assert of(rows, "hung_up")[0]["detail"]["side"] == "caller"
        # The caller really talks with taker1 after the drop: taker1's tone is recorded.
        call_id = str(
            wait_rows(e2e_dsn, "SELECT call_id FROM calls WHERE caller_number = $1", N_CALLER)[0][
                "call_id"
            ]
        )
        wav = inst.recording_dir / f"siaga-call-{call_id}.wav"
        wait_rows(e2e_dsn, "SELECT 1 FROM recordings WHERE call_id = $1", call_id)
        after = answered[1]["at"] - of(rows, "arrived")[0]["at"] + 0.5
        assert tone_strength(wav, TAKER1_HZ, start_s=after) > 500
        wait_clean(inst)

    def test_quiet_taker_sending_no_rtp_is_never_cut(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A taker whose phone sends no RTP at all for 20 s but answers qualify keeps the call."""
        inst = asterisk_instance
        taker4 = alive_handset(sipp, media="none")
        wait_reachable(inst, "taker4")
        svc = service(extra=config(("taker4", "taker1")))
        taker1 = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        caller = sipp.caller(from_user=N_CALLER, talk_s=26.0, hangup="bye", timeout_s=90)
        answered_at = wait_for(lambda: connected_to(svc) == ["taker4"], 10, "bridged to taker4")
        # Twice the detection time, and four qualify rounds, with not one RTP packet.
        while time.time() - answered_at < 2 * DETECT_S:
            assert connected_to(svc) == ["taker4"], svc.log_tail()
            time.sleep(0.5)
        caller_result = caller.wait()
        caller_result.assert_ok()
        assert caller_result.ended_by == ["local"]
        rows = timeline(e2e_dsn, lambda s: "hung_up" in s)
        assert of(rows, "taker_left") == []
        hung_up = of(rows, "hung_up")[0]["detail"]
        assert (hung_up["side"], hung_up["taker_id"]) == ("caller", "taker4")
        assert hung_up["talk_s"] >= 2 * DETECT_S
        taker1.kill()
        assert taker1.wait().received("INVITE") == []  # nobody else was ever rung
        taker4.kill()
        phone = taker4.wait()
        assert "siaga: ended-by remote" in phone.log_text  # Asterisk's BYE for the caller's end
        assert "streaming tone.ulaw" not in phone.log_text  # it really sent no RTP
        assert len(phone.received("OPTIONS")) >= 4  # qualified all along, and answered
        wait_clean(inst)

    def test_dispatcher_handset_that_dies_leaves_the_conference_as_a_failed_leg(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A dispatcher's phone that dies without a BYE leaves the call within 10 s as a
        failed leg; the caller and the taker talk on."""
        inst = asterisk_instance
        phone = alive_handset(sipp, media="tone")
        wait_reachable(inst, "taker4")
        agencies = [{"code": "sar", "name": "Basarnas", "digit": 4, "endpoints": ["PJSIP/taker4"]}]
        svc = service(
            extra=config(
                ("taker1",),
                SIAGA_AGENCIES=json.dumps(agencies),
                SIAGA_AGENCIES_FROM_DATABASE="false",
            )
        )
        taker1 = sipp.handset(5071, name="taker1", ring_s=0.5, hangup="wait", timeout_s=60)
        caller = sipp.caller(from_user=N_CALLER, talk_s=25.0, hangup="bye", timeout_s=90)
        wait_for(lambda: connected_to(svc) == ["taker1"], 10, "bridged to taker1")
        call_id = str(
            wait_rows(e2e_dsn, "SELECT call_id FROM calls WHERE caller_number = $1", N_CALLER)[0][
                "call_id"
            ]
        )
        status, body = svc.post(f"/api/calls/{call_id}/dispatchers", {"agency": "sar"})
        assert status == 202, body

        def bridge() -> list[str]:
            _, b = inst.ari("GET", f"bridges/siaga-call-{call_id}")
            return list(b["channels"]) if b else []

        wait_for(lambda: any(c.startswith("siaga-disp-") for c in bridge()), 10, "leg joined")
        time.sleep(1.0)
        died_at = vanish(phone)
        gone_at = wait_for(
            lambda: not any(c.startswith("siaga-disp-") for c in bridge()),
            DETECT_S + 3,
            "the dead leg out of the call bridge",
        )
        assert gone_at - died_at <= DETECT_S + MARGIN_S, gone_at - died_at
        assert len(bridge()) == 2  # caller and taker go on
        assert connected_to(svc) == ["taker1"]
        caller.wait().assert_ok()
        taker1.wait().assert_ok()
        rows = timeline(e2e_dsn, lambda s: "dispatcher_left" in s and "hung_up" in s)
        left = [r["detail"] for r in of(rows, "dispatcher_left")]
        assert [(d["agency"], d["reason"], d["failed"]) for d in left] == [
            ("sar", "handset-lost", True)
        ]
        assert of(rows, "taker_left") == []
        wait_clean(inst)
