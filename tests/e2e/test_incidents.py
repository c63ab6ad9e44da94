"""Incident records of real calls: identity, timeline, recordings, repeat callers,
and nothing lost while PostgreSQL is down (a private server, stopped for real)."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path
from typing import Any

from harness import AsteriskInstance, SippRunner
from harness.checks import db_rows, wait_rows
from harness.pgserver import PrivatePostgres
from harness.service import ServiceFactory
from pgtools import run_sync
from siaga_pbx.incidents import migrate


def _timeline(dsn: str, call_id: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
    return wait_rows(
        dsn,
        "SELECT stage, at, detail FROM timeline WHERE call_id = $1 ORDER BY id",
        call_id,
        until=lambda rows: any(r["stage"] == "hung_up" for r in rows),
        timeout=timeout,
    )


def _one_answered_call(sipp: SippRunner, number: str, **caller: Any) -> None:
    handset = sipp.handset(5071, ring_s=0.3, hangup="wait", timeout_s=60)
    sipp.caller(from_user=number, talk_s=3.0, **caller).wait().assert_ok()
    handset.wait().assert_ok()


def _exactly_once(dsn: str, number: str) -> list[dict[str, Any]]:
    calls = wait_rows(dsn, "SELECT * FROM calls WHERE caller_number = $1", number, timeout=30)
    assert len(calls) == 1, calls
    rows = _timeline(dsn, str(calls[0]["call_id"]), timeout=30)
    stages = [r["stage"] for r in rows]
    for stage in ("arrived", "queued", "offered", "answered", "hung_up"):
        assert stages.count(stage) == 1, stages
    return rows


class TestIncidentRecord:
    def test_recording_checksum_and_wait_talk_times(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
        e2e_dsn: str,
    ) -> None:
        """The recording's sha256 matches the file; wait and talk come from the timeline."""
        service()
        handset = sipp.handset(5071, ring_s=1.0, hangup="wait", timeout_s=60)
        sipp.caller(from_user="0812000001", talk_s=5.0).wait().assert_ok()
        handset.wait().assert_ok()
        call_id = str(wait_rows(e2e_dsn, "SELECT call_id FROM calls")[0]["call_id"])
        rec = wait_rows(e2e_dsn, "SELECT * FROM recordings WHERE call_id = $1", call_id)[0]
        data = Path(str(rec["path"])).read_bytes()
        assert rec["sha256"] == hashlib.sha256(data).hexdigest()
        assert rec["size_bytes"] == len(data)
        times = wait_rows(e2e_dsn, "SELECT * FROM call_times WHERE call_id = $1", call_id)[0]
        # The handset rings for 1 s before it answers; the caller talks until 5 s.
        assert 0.8 <= float(times["wait_s"]) <= 2.0, times
        assert 2.5 <= float(times["talk_s"]) <= 4.8, times

    def test_hostile_caller_name_is_stored_verbatim(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """An SQL-looking, 2 KB caller name is stored exactly as sent."""
        service()
        name = "Robert'); DROP TABLE calls;-- " + "x" * 2000
        _one_answered_call(sipp, "0812000002", from_name=name)
        row = wait_rows(e2e_dsn, "SELECT caller_name FROM calls")[0]
        assert row["caller_name"] == name
        assert db_rows(e2e_dsn, "SELECT count(*) AS n FROM calls")[0]["n"] == 1

    def test_repeat_caller_is_linked_to_the_earlier_incident(
        self, service: ServiceFactory, sipp: SippRunner, e2e_dsn: str
    ) -> None:
        """A second call from the same number within the window links to the first incident."""
        # One call taker, so both calls ring the one handset sipp plays.
        service(extra={"SIAGA_TAKERS": '[{"id": "taker1", "endpoint": "PJSIP/taker1"}]'})
        handset = sipp.handset(5071, ring_s=0.3, calls=2, hangup="wait", timeout_s=60)
        sipp.caller(from_user="0812000003", talk_s=2.0, name="first").wait().assert_ok()
        sipp.caller(from_user="0812000003", talk_s=2.0, name="again").wait().assert_ok()
        handset.wait().assert_ok()
        calls = wait_rows(
            e2e_dsn,
            "SELECT call_id, incident_id FROM calls ORDER BY arrived_at",
            until=lambda r: len(r) == 2,
        )
        links = wait_rows(e2e_dsn, "SELECT * FROM incident_links")
        assert [(r["incident_id"], r["linked_incident_id"], r["kind"]) for r in links] == [
            (calls[1]["incident_id"], calls[0]["incident_id"], "repeat_caller")
        ]


class TestDatabaseOutage:
    def _start(self, service: ServiceFactory, pg: PrivatePostgres) -> Any:
        run_sync(lambda: migrate(pg.dsn))
        return service(extra={"SIAGA_DATABASE_DSN": pg.dsn})

    def test_call_completes_and_incident_appears_once_after_recovery(
        self, service: ServiceFactory, sipp: SippRunner, private_pg: PrivatePostgres
    ) -> None:
        """With PostgreSQL stopped the call goes on undelayed; its incident lands once later."""
        svc = self._start(service, private_pg)
        private_pg.stop()
        _one_answered_call(sipp, "0812000010")
        assert svc.health()["outbox_pending"] > 0
        private_pg.start()
        rows = _exactly_once(private_pg.dsn, "0812000010")
        at = {r["stage"]: r["at"] for r in rows}
        assert (at["offered"] - at["arrived"]).total_seconds() < 1.0  # no database delay

    def test_service_restart_before_the_database_returns(
        self, service: ServiceFactory, sipp: SippRunner, private_pg: PrivatePostgres
    ) -> None:
        """The outbox survives a service restart and replays once PostgreSQL is back."""
        first = self._start(service, private_pg)
        private_pg.stop()
        _one_answered_call(sipp, "0812000011")
        assert first.stop(signal.SIGTERM) == 0
        second = service(extra={"SIAGA_DATABASE_DSN": private_pg.dsn})
        assert second.health()["outbox_pending"] > 0
        private_pg.start()
        _exactly_once(private_pg.dsn, "0812000011")
