"""The call-distribution engine on real Asterisk 22 with sipp callers and handsets.

Each test configures the service's queues and call takers through SIAGA_*
environment variables, places real calls, and checks the outcome from three
sides: what sipp saw, what the service reports live (/api/state), and the
incident timeline in PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.request
from typing import Any

from harness import AsteriskInstance, SippRunner
from harness.checks import wait_clean, wait_rows
from harness.service import TOKEN, ServiceFactory, ServiceProcess

TAKER_PORTS = {"taker1": 5071, "taker2": 5072, "taker3": 5073}


def config(queues: list[dict[str, Any]], takers: list[dict[str, Any]]) -> dict[str, str]:
    return {"SIAGA_QUEUES": json.dumps(queues), "SIAGA_TAKERS": json.dumps(takers)}


def taker(tid: str, queues: tuple[str, ...] = ("main",), **extra: Any) -> dict[str, Any]:
    return {"id": tid, "endpoint": f"PJSIP/{tid}", "queues": list(queues), **extra}


def queue(name: str = "main", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": name, "strategy": "linear", "ring_timeout_s": 10.0}
    return base | extra


def calls_by_number(dsn: str, count: int) -> dict[str, str]:
    rows = wait_rows(
        dsn, "SELECT call_id, caller_number FROM calls", until=lambda r: len(r) >= count
    )
    return {str(r["caller_number"]): str(r["call_id"]) for r in rows}


def timeline(dsn: str, call_id: str, until: str = "hung_up") -> list[dict[str, Any]]:
    return wait_rows(
        dsn,
        "SELECT stage, at, detail FROM timeline WHERE call_id = $1 ORDER BY id",
        call_id,
        until=lambda rows: any(r["stage"] == until for r in rows),
    )


def first(rows: list[dict[str, Any]], stage: str) -> dict[str, Any]:
    return next(r for r in rows if r["stage"] == stage)


def taker_state(svc: ServiceProcess, tid: str) -> dict[str, Any]:
    return next(t for t in svc.state()["takers"] if t["id"] == tid)


class TestQueueing:
    def test_third_caller_waits_for_the_first_free_taker(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """Three callers, two takers: the third waits, then gets the first taker to free up."""
        svc = service(extra=config([queue()], [taker("taker1"), taker("taker2")]))
        h1 = sipp.handset(5071, ring_s=0.3, calls=2, hangup="wait", timeout_s=60)
        h2 = sipp.handset(5072, ring_s=0.3, calls=1, hangup="wait", timeout_s=60)
        c1 = sipp.caller(from_user="0811000001", talk_s=3.0, name="c1")
        c2 = sipp.caller(from_user="0811000002", talk_s=8.0, name="c2")
        time.sleep(1.0)
        c3 = sipp.caller(from_user="0811000003", talk_s=6.0, name="c3")
        snap = svc.wait_state(
            lambda s: [w["number"] for q in s["queues"] for w in q["waiting"]] == ["0811000003"],
            5,
            "caller 3 waiting",
        )
        assert {c["number"] for q in snap["queues"] for c in q["connected"]} == {
            "0811000001",
            "0811000002",
        }
        for proc in (c1, c2, c3, h1, h2):
            proc.wait().assert_ok()
        ids = calls_by_number(e2e_dsn, 3)
        t1, t3 = timeline(e2e_dsn, ids["0811000001"]), timeline(e2e_dsn, ids["0811000003"])
        answered3 = first(t3, "answered")
        assert answered3["detail"]["taker_id"] == first(t1, "answered")["detail"]["taker_id"]
        assert answered3["at"] >= first(t1, "hung_up")["at"]
        wait_clean(asterisk_instance)

    def test_priority_caller_overtakes(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """A configured priority number (a hospital) is served before an earlier normal caller."""
        hospital = "0761000119"
        svc = service(extra=config([queue(priority_numbers={hospital: 1})], [taker("taker1")]))
        h1 = sipp.handset(5071, ring_s=0.3, calls=3, hangup="wait", timeout_s=60)
        busy = sipp.caller(from_user="0811000010", talk_s=3.0, name="busy")
        svc.wait_state(lambda s: any(q["connected"] for q in s["queues"]), 5, "first call up")
        normal = sipp.caller(from_user="0811000011", talk_s=10.0, name="normal")
        svc.wait_state(lambda s: any(q["waiting"] for q in s["queues"]), 5, "normal waiting")
        urgent = sipp.caller(from_user=hospital, talk_s=6.0, name="urgent")
        snap = svc.wait_state(
            lambda s: len([w for q in s["queues"] for w in q["waiting"]]) == 2, 5, "two waiting"
        )
        order = [w["number"] for q in snap["queues"] for w in q["waiting"]]
        assert order == [hospital, "0811000011"]
        for proc in (busy, normal, urgent, h1):
            proc.wait().assert_ok()
        ids = calls_by_number(e2e_dsn, 3)
        urgent_at = first(timeline(e2e_dsn, ids[hospital]), "answered")["at"]
        normal_at = first(timeline(e2e_dsn, ids["0811000011"]), "answered")["at"]
        assert urgent_at < normal_at


class TestOffers:
    def test_ring_no_answer_moves_on_and_auto_pauses(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """An unanswered ring moves the caller to the next taker; two misses pause the taker."""
        svc = service(
            extra=config(
                [queue(ring_timeout_s=2.0, retry_delay_s=0.5, max_misses=2)],
                [taker("taker1"), taker("taker2")],
            )
        )
        silent = sipp.handset(5071, mode="noanswer", calls=2, timeout_s=60, name="silent")
        h2 = sipp.handset(5072, ring_s=0.3, calls=2, hangup="wait", timeout_s=60)
        c1 = sipp.caller(from_user="0811000021", talk_s=5.0, name="c1")
        c1.wait().assert_ok()
        assert taker_state(svc, "taker1")["misses"] == 1
        c2 = sipp.caller(from_user="0811000022", talk_s=5.0, name="c2")
        c2.wait().assert_ok()
        t1 = svc.wait_state(
            lambda s: next(t for t in s["takers"] if t["id"] == "taker1")["status"] == "paused",
            5,
            "taker1 auto-paused",
        )
        assert next(t for t in t1["takers"] if t["id"] == "taker1")["reason"] == "missed-calls"
        h2.wait().assert_ok()
        silent_result = silent.wait()
        assert silent_result.ended_by == ["cancel", "cancel"], silent_result.describe()
        ids = calls_by_number(e2e_dsn, 2)
        for number in ("0811000021", "0811000022"):
            rows = timeline(e2e_dsn, ids[number])
            stages = [r["stage"] for r in rows]
            assert stages.index("offer_failed") < stages.index("answered"), stages
            assert first(rows, "answered")["detail"]["taker_id"] == "taker2"

    def test_abandon_while_ringing_stops_the_ring_and_leaves_a_callback(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A caller who hangs up while a handset rings stops the ringing and gets a callback."""
        svc = service(extra=config([queue(ring_timeout_s=30.0)], [taker("taker1")]))
        silent = sipp.handset(5071, mode="noanswer", timeout_s=60, name="silent")
        caller = sipp.caller(from_user="0811000031", talk_s=3.0, name="gives-up")
        caller.wait().assert_ok()
        assert silent.wait().ended_by == ["cancel"]
        row = wait_rows(e2e_dsn, "SELECT * FROM callbacks")[0]
        assert (row["number"], row["where_abandoned"]) == ("0811000031", "ringing")
        assert 2.0 <= float(row["wait_s"]) <= 6.0
        pending = svc.wait_state(lambda s: bool(s["callbacks"]), 5, "callback listed")
        assert pending["callbacks"][0]["number"] == "0811000031"
        # Fails (times out) unless the incident is marked abandoned.
        wait_rows(
            e2e_dsn,
            "SELECT disposition FROM incidents",
            until=lambda r: bool(r) and r[0]["disposition"] == "abandoned",
        )
        wait_clean(asterisk_instance)

    def test_unreachable_handset_is_not_offered_calls(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """A taker whose handset is not registered is never rung; the next taker answers."""
        # "ghost" sits on an endpoint with no contact (nothing registered), first in line.
        ghost = taker("ghost") | {"endpoint": "PJSIP/lab-caller"}
        svc = service(extra=config([queue()], [ghost, taker("taker1")]))
        state = svc.wait_state(
            lambda s: next(t for t in s["takers"] if t["id"] == "ghost")["reachable"] is False,
            5,
            "ghost seen as unreachable",
        )
        assert next(t for t in state["takers"] if t["id"] == "taker1")["reachable"] is True
        h1 = sipp.handset(5071, ring_s=0.3, hangup="wait", timeout_s=60)
        caller = sipp.caller(from_user="0811000041", talk_s=4.0)
        caller.wait().assert_ok()
        h1.wait().assert_ok()
        rows = timeline(e2e_dsn, calls_by_number(e2e_dsn, 1)["0811000041"])
        offered = [r["detail"]["taker_id"] for r in rows if r["stage"] == "offered"]
        assert offered == ["taker1"], rows
        assert first(rows, "answered")["detail"]["taker_id"] == "taker1"


class TestTakerLeaves:
    def test_taker_hangup_requeues_the_caller_to_another_taker(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """With requeue on taker hangup, the caller left by a taker is answered by another."""
        service(
            extra=config([queue(requeue_on_taker_hangup=True)], [taker("taker1"), taker("taker2")])
        )
        leaver = sipp.handset(5071, ring_s=0.3, talk_s=2.0, hangup="bye", timeout_s=60)
        h2 = sipp.handset(5072, ring_s=0.3, hangup="wait", timeout_s=60)
        caller = sipp.caller(from_user="0811000051", talk_s=7.0, hangup="bye")
        caller.wait().assert_ok()
        leaver.wait().assert_ok()
        h2.wait().assert_ok()
        rows = timeline(e2e_dsn, calls_by_number(e2e_dsn, 1)["0811000051"])
        stages = [r["stage"] for r in rows]
        assert stages.count("answered") == 2, stages
        assert stages.index("taker_left") < stages.index("requeued") < len(stages) - 1
        answers = [r["detail"]["taker_id"] for r in rows if r["stage"] == "answered"]
        assert answers == ["taker1", "taker2"]
        assert rows[-1]["stage"] == "hung_up"
        assert rows[-1]["detail"]["side"] == "caller"
        wait_clean(asterisk_instance)


class TestOverflow:
    def test_overflow_to_backup_queue_after_timeout(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """A caller not answered within overflow_after moves to the backup queue's takers."""
        service(
            extra=config(
                [
                    queue(
                        ring_timeout_s=2.0,
                        retry_delay_s=0.5,
                        overflow={"after_s": 3.0, "queue": "backup"},
                    ),
                    queue("backup"),
                ],
                [taker("taker1", ("main",)), taker("taker2", ("backup",))],
            )
        )
        silent = sipp.handset(5071, mode="noanswer", calls=3, timeout_s=40, name="silent")
        backup = sipp.handset(5072, ring_s=0.3, hangup="wait", timeout_s=60)
        caller = sipp.caller(from_user="0811000061", talk_s=8.0)
        caller.wait().assert_ok()
        backup.wait().assert_ok()
        silent.kill()
        rows = timeline(e2e_dsn, calls_by_number(e2e_dsn, 1)["0811000061"])
        overflowed = first(rows, "overflowed")
        assert overflowed["detail"]["to_queue"] == "backup", overflowed
        arrived = first(rows, "arrived")["at"]
        assert (overflowed["at"] - arrived).total_seconds() >= 3.0
        assert first(rows, "answered")["detail"]["taker_id"] == "taker2"


class TestFeatureCodes:
    def test_pause_unpause_logout_login_from_the_handset(
        self, service: ServiceFactory, sipp: SippRunner, asterisk_instance: AsteriskInstance
    ) -> None:
        """*13 pauses, *14 unpauses, *12 logs out and *11 logs in, each confirmed by a prompt."""
        svc = service(extra=config([queue()], [taker("taker1")]))
        password = asterisk_instance.values["SECRET_TAKER1"]
        for code, status in (
            ("*13", "paused"),
            ("*14", "available"),
            ("*12", "offline"),
            ("*11", "available"),
        ):
            sipp.feature(code, user="taker1", password=password).wait().assert_ok()
            svc.wait_state(
                lambda s, want=status: s["takers"][0]["status"] == want, 5, f"{code} -> {status}"
            )

    def test_handset_codes_and_api_actions_are_audited_by_the_running_service(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """The real service audits a handset's *13 as taker1's own action, an API
        logout as the admin token's (with the response's request id), and a refused
        *14 (logged out) with the core's reason: one row each in PostgreSQL."""
        svc = service(extra=config([queue()], [taker("taker1")]))
        password = asterisk_instance.values["SECRET_TAKER1"]
        sipp.feature("*13", user="taker1", password=password).wait().assert_ok()
        svc.wait_state(lambda s: s["takers"][0]["status"] == "paused", 5, "*13 -> paused")
        req = urllib.request.Request(
            f"{svc.url}/api/takers/taker1/logout",
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 202
            request_id = resp.headers["X-Request-Id"]
        svc.wait_state(lambda s: s["takers"][0]["status"] == "offline", 5, "logged out")
        sipp.feature("*14", user="taker1", password=password).wait().assert_ok()
        rows = wait_rows(
            e2e_dsn,
            "SELECT who, role, action, target, outcome, reason, source, request_id"
            " FROM audit ORDER BY at, id",
            until=lambda r: len(r) == 3,
        )
        fingerprint = hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
        assert [(r["who"], r["action"], r["target"], r["outcome"], r["source"]) for r in rows] == [
            ("taker:taker1", "taker.pause", "taker:taker1", "accepted", "handset"),
            (f"admin:{fingerprint}", "taker.logout", "taker:taker1", "accepted", "127.0.0.1"),
            ("taker:taker1", "taker.unpause", "taker:taker1", "refused", "handset"),
        ]
        assert "offline" in rows[2]["reason"]
        assert rows[1]["request_id"] == request_id
