"""Callbacks end to end on real Asterisk 22, sipp and PostgreSQL: an abandoned
caller's callback is recorded in PostgreSQL, survives a restart of the
service (PostgreSQL up or down at the start), and is resolved from the API."""

from __future__ import annotations

import json
import time
from typing import Any

from harness import AsteriskInstance, SippRunner
from harness.checks import db_rows, wait_clean, wait_rows
from harness.pgserver import PrivatePostgres
from harness.service import ServiceFactory, ServiceProcess
from pgtools import run_sync
from siaga_pbx.incidents import migrate

# Nobody is on duty and there is no overflow target: a caller waits until
# they give up, which makes an abandoned call and so a callback.
NOBODY_ON_DUTY = {
    "SIAGA_QUEUES": json.dumps([{"name": "main", "strategy": "linear"}]),
    "SIAGA_TAKERS": json.dumps(
        [{"id": "taker1", "endpoint": "PJSIP/taker1", "queues": ["main"], "logged_in": False}]
    ),
}


def pending(svc: ServiceProcess) -> list[str]:
    return [c["call_id"] for c in svc.state()["callbacks"]]


def abandon(sipp: SippRunner, dsn: str, number: str, seen: int) -> str:
    """A caller from ``number`` waits 2 s and hangs up; their callback's call id
    once PostgreSQL has it (``seen`` callbacks were there before)."""
    sipp.caller(from_user=number, talk_s=2.0, name=f"gives-up-{number}").wait().assert_ok()
    rows = wait_rows(
        dsn,
        "SELECT call_id, number, status FROM callbacks WHERE number = $1",
        number,
        until=lambda r: len(r) == 1,
        timeout=20,
    )
    assert rows[0]["status"] == "pending", rows
    assert len(db_rows(dsn, "SELECT 1 FROM callbacks")) == seen + 1
    return str(rows[0]["call_id"])


def restored(svc: ServiceProcess) -> list[dict[str, Any]]:
    return [e for e in svc.log_lines() if e.get("event") == "callbacks.restored"]


class TestCallbacksSurviveRestarts:
    def test_abandoned_callback_survives_a_restart_and_is_resolved_from_the_api(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """A caller abandons: the callback is pending in PostgreSQL; after a
        restart it is pending in /api/state again; resolving it via the API
        removes it and records who, how and when, and it stays resolved."""
        svc = service(extra=NOBODY_ON_DUTY)
        call_id = abandon(sipp, e2e_dsn, "0811000071", 0)
        assert svc.wait_state(lambda s: bool(s["callbacks"]), 5, "callback listed")
        assert svc.stop() == 0

        svc2 = service(extra=NOBODY_ON_DUTY)
        svc2.wait_state(lambda s: pending(svc2) == [call_id], 15, "callback restored")
        assert restored(svc2)[0]["count"] == 1
        number = svc2.state()["callbacks"][0]["number"]
        assert number == "0811000071"

        status, body = svc2.post(
            f"/api/callbacks/{call_id}/resolve", {"resolution": "called_back", "note": "all well"}
        )
        assert status == 202, body
        svc2.wait_state(lambda s: s["callbacks"] == [], 5, "callback gone from the live state")
        row = wait_rows(
            e2e_dsn,
            "SELECT status, resolution, resolution_note, resolved_by, resolved_at, incident_id"
            " FROM callbacks WHERE call_id = $1",
            call_id,
            until=lambda r: bool(r) and r[0]["status"] == "resolved",
        )[0]
        assert (row["resolution"], row["resolution_note"]) == ("called_back", "all well")
        assert row["resolved_by"].startswith("admin:")
        assert abs(row["resolved_at"].timestamp() - time.time()) < 30
        entry = wait_rows(
            e2e_dsn,
            "SELECT incident_id, detail FROM timeline WHERE call_id = $1"
            " AND stage = 'callback_resolved'",
            call_id,
        )[0]
        assert entry["incident_id"] == row["incident_id"]
        assert entry["incident_id"] is not None
        assert entry["detail"]["resolution"] == "called_back"
        status, body = svc2.post(f"/api/callbacks/{call_id}/resolve", {"resolution": "not_needed"})
        assert status == 409, body
        assert svc2.stop() == 0

        svc3 = service(extra=NOBODY_ON_DUTY)
        svc3.wait_until(lambda h: bool(restored(svc3)), 15, "restore done")
        assert restored(svc3)[0]["count"] == 0
        assert svc3.state()["callbacks"] == []
        wait_clean(asterisk_instance)

    def test_service_starts_with_postgres_down_and_restores_callbacks_once_it_is_back(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        private_pg: PrivatePostgres,
    ) -> None:
        """With PostgreSQL down the restarted service takes calls (a new abandon
        is listed at once); the callbacks from before the restart come back
        when PostgreSQL does."""
        dsn = private_pg.dsn
        run_sync(lambda: migrate(dsn))
        cfg = NOBODY_ON_DUTY | {"SIAGA_DATABASE_DSN": dsn}
        svc = service(extra=cfg)
        before = abandon(sipp, dsn, "0811000072", 0)
        assert svc.stop() == 0
        private_pg.stop()

        svc2 = service(extra=cfg)
        sipp.caller(from_user="0811000073", talk_s=2.0, name="gives-up-down").wait().assert_ok()
        during = svc2.wait_state(lambda s: len(s["callbacks"]) == 1, 10, "new callback listed")
        assert during["callbacks"][0]["number"] == "0811000073"
        assert restored(svc2) == []  # still waiting for PostgreSQL
        private_pg.start()
        svc2.wait_state(lambda s: len(s["callbacks"]) == 2, 30, "old callback restored")
        assert pending(svc2)[0] == before  # oldest first
        assert restored(svc2)[0]["count"] == 2
        wait_rows(dsn, "SELECT 1 FROM callbacks", until=lambda r: len(r) == 2, timeout=20)
        wait_clean(asterisk_instance)
