"""The centre's configuration as data on the real service, Asterisk 22, sipp
and PostgreSQL: changed through the API, applied live, kept across restarts
(PostgreSQL up, then down), and never removing a queue from under a caller."""

from __future__ import annotations

import json
import socket
from typing import Any

from harness import AsteriskInstance, SippRunner
from harness.checks import wait_clean
from harness.service import ServiceFactory, ServiceProcess


def queue_state(svc: ServiceProcess, name: str) -> dict[str, Any]:
    return next(q for q in svc.state()["queues"] if q["name"] == name)


def closed_port_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://postgres@127.0.0.1:{port}/nowhere"


class TestConfigurationSurvivesRestarts:
    def test_a_queue_and_a_taker_changed_through_the_api_survive_restarts(
        self, service: ServiceFactory, e2e_dsn: str
    ) -> None:
        """A PATCHed queue and a POSTed taker apply live, are there after a restart,
        and after a restart with PostgreSQL down (from the local copy)."""
        svc = service()
        main = svc.get("/api/queues/main")
        status, body = svc.post(
            "/api/queues/main",
            {"version": main["version"], "strategy": "ringall", "ring_timeout_s": 11.5},
            method="PATCH",
        )
        assert status == 200, body
        assert body["version"] == main["version"] + 1
        status, taker = svc.post(
            "/api/takers", {"id": "taker9", "endpoint": "PJSIP/taker9", "queues": ["backup"]}
        )
        assert status == 201, taker
        svc.wait_state(
            lambda s: (
                next(q for q in s["queues"] if q["name"] == "main")["strategy"] == "ringall"
                and "taker9" in {t["id"] for t in s["takers"]}
            ),
            5,
            "the change applied live",
        )
        assert svc.stop() == 0

        svc2 = service()
        assert svc2.get("/api/queues/main") == body
        assert queue_state(svc2, "main")["strategy"] == "ringall"
        assert "taker9" in {t["id"] for t in svc2.state()["takers"]}
        assert svc2.stop() == 0

        svc3 = service(extra={"SIAGA_DATABASE_DSN": closed_port_dsn()})
        assert svc3.get("/api/queues/main") == body
        assert queue_state(svc3, "main")["strategy"] == "ringall"
        loaded = [e for e in svc3.log_lines() if e.get("event") == "centre.loaded"]
        assert loaded[-1]["source"] == "local copy", loaded
        status, refused = svc3.post(
            "/api/queues/main", {"version": body["version"], "wrapup_s": 1.0}, method="PATCH"
        )
        assert status == 503, refused


class TestNoCallerIsDropped:
    def test_a_queue_with_a_waiting_caller_cannot_be_removed(
        self, service: ServiceFactory, sipp: SippRunner, asterisk_instance: AsteriskInstance
    ) -> None:
        """A caller waits in queue ``night``: removing it is 409 with the reason and the
        caller keeps waiting; once the caller has gone, the same removal succeeds."""
        cfg = {
            "SIAGA_QUEUES": json.dumps(
                [
                    {"name": "main", "strategy": "linear", "overflow": {"queue": "night"}},
                    {"name": "night", "strategy": "linear"},
                ]
            ),
            "SIAGA_TAKERS": json.dumps(
                [{"id": "taker1", "endpoint": "PJSIP/taker1", "logged_in": False}]
            ),
        }
        svc = service(extra=cfg)
        main = svc.get("/api/queues/main")
        # nobody on duty: the caller overflows to night at once and waits there
        caller = sipp.caller(from_user="0811000091", talk_s=10.0, name="waits")
        svc.wait_state(
            lambda s: len(next(q for q in s["queues"] if q["name"] == "night")["waiting"]) == 1,
            8,
            "the caller waiting in night",
        )
        status, body = svc.post(
            "/api/queues/main",
            {"version": main["version"], "overflow": {"queue": ""}},
            method="PATCH",
        )
        assert status == 200, body  # nothing refers to night any more
        status, refused = svc.post("/api/queues/night?version=1", method="DELETE")
        assert status == 409, refused
        assert "1 waiting" in refused["detail"]
        assert [q["name"] for q in svc.get("/api/queues")["queues"]] == ["main", "night"]
        assert len(queue_state(svc, "night")["waiting"]) == 1
        caller.wait().assert_ok()
        svc.wait_state(lambda s: not any(q["waiting"] for q in s["queues"]), 8, "caller gone")
        status, gone = svc.post("/api/queues/night?version=1", method="DELETE")
        assert status == 200, gone
        assert [q["name"] for q in svc.get("/api/queues")["queues"]] == ["main"]
        wait_clean(asterisk_instance)
