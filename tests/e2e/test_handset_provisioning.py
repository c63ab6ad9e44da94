"""Handsets without file edits: a call taker that pjsip.conf does not know (``taker9``) is
given to the service with a password; the service creates its PJSIP endpoint, auth and AOR
in the running Asterisk (adapters.handsets), a sipp handset registers with those credentials
and answers a 112 call. No file is edited and Asterisk is not restarted.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from typing import Any

import pytest

from harness import AsteriskInstance, SippRunner
from harness.asterisk import REPO_ROOT
from harness.checks import wait_clean
from harness.service import ServiceFactory, ServiceProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NEW = "taker9"
PASSWORD = "taker9-provisioned-secret"
HANDSET_PORT = 5179
DYNAMIC = "asterisk/config/dynamic/res_pjsip"
# Fields of one handset's objects that name the handset itself.
OWN_FIELDS = {
    "endpoint": {"auth", "aors", "callerid", "tenantid"},
    "auth": {"username", "password"},
    "aor": {"contact"},  # static test handsets have a fixed contact; ours register
}


def _config(takers: tuple[str, ...], passwords: dict[str, str]) -> dict[str, str]:
    queue = {"name": "main", "strategy": "linear", "ring_timeout_s": 10.0}
    t = [{"id": tid, "endpoint": f"PJSIP/{tid}", "queues": ["main"]} for tid in takers]
    return {
        "SIAGA_QUEUES": json.dumps([queue]),
        "SIAGA_TAKERS": json.dumps(t),
        "SIAGA_HANDSETS__PASSWORDS": json.dumps(passwords),
        "SIAGA_HANDSETS__QUALIFY_FREQUENCY_S": "0",  # the test profile's AOR_QUALIFY_FREQUENCY
    }


def _object(instance: AsteriskInstance, object_type: str, oid: str) -> dict[str, str] | None:
    status, body = instance.ari("GET", f"{DYNAMIC}/{object_type}/{oid}")
    if status == 404:
        return None
    assert status == 200, (status, body)
    return {t["attribute"]: t["value"] for t in body}


def _forget(instance: AsteriskInstance, oid: str) -> None:
    """Remove a provisioned handset straight through ARI (test cleanup)."""
    for object_type in ("endpoint", "auth", "aor"):
        status, body = instance.ari("DELETE", f"{DYNAMIC}/{object_type}/{oid}")
        assert status in (204, 404), (object_type, status, body)


def _asterisk_pid(instance: AsteriskInstance) -> str:
    return (instance.instance_dir / "run" / "siaga-instance.pid").read_text().strip()


def _files_digest(instance: AsteriskInstance) -> str:
    digest = hashlib.sha256()
    for path in sorted((instance.instance_dir / "etc").rglob("*")):
        if path.is_file():
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _synced(svc: ServiceProcess) -> list[dict[str, Any]]:
    return [e for e in svc.log_lines() if e.get("event") == "handsets.synced"]


def _wait_synced(svc: ServiceProcess, count: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = _synced(svc)
        if len(done) >= count:
            return done[count - 1]
        time.sleep(0.1)
    raise AssertionError(f"no handsets.synced #{count}; log tail:\n{svc.log_tail()}")


def _taker(state: dict[str, Any], taker_id: str) -> dict[str, Any]:
    return next(t for t in state["takers"] if t["id"] == taker_id)


@pytest.fixture
def no_taker9(asterisk_instance: AsteriskInstance) -> Any:
    """taker9 is absent from Asterisk before and after the test."""
    _forget(asterisk_instance, NEW)
    yield
    _forget(asterisk_instance, NEW)


@pytest.mark.usefixtures("no_taker9")
class TestProvisionedHandsets:
    def test_new_taker_registers_and_answers_a_112_call_without_file_edit_or_restart(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
    ) -> None:
        """A taker unknown to pjsip.conf is created in the running Asterisk, registers with its
        new password (a wrong one is refused), takes a 112 call; a second start changes
        nothing, its removal through the API deletes it, pjsip.conf's handsets stay as they are."""
        pid, files = _asterisk_pid(asterisk_instance), _files_digest(asterisk_instance)
        assert _object(asterisk_instance, "endpoint", NEW) is None

        svc = service(extra=_config((NEW,), {NEW: PASSWORD}))
        first = _wait_synced(svc, 1)
        assert first["created"] == [NEW], first

        # Configured like pjsip.conf's own handsets, field by field (taker1 is static).
        for object_type, own in OWN_FIELDS.items():
            ours = _object(asterisk_instance, object_type, NEW)
            static = _object(asterisk_instance, object_type, "taker1")
            assert ours is not None and static is not None, object_type
            differing = {
                k: (ours.get(k), static.get(k))
                for k in ours.keys() | static.keys()
                if k not in own and ours.get(k) != static.get(k)
            }
            assert not differing, (object_type, differing)

        refused = sipp.register(user=NEW, password="not-" + PASSWORD).wait()
        assert not refused.ok, refused.describe()

        began = time.monotonic()
        handset = sipp.lab_handset(
            HANDSET_PORT, user=NEW, password=PASSWORD, talk_s=3.0, hangup="bye", expires_s=60
        )
        svc.wait_state(lambda s: _taker(s, NEW)["reachable"], 10, f"{NEW} registered")
        assert time.monotonic() - began < 5.0  # "within seconds" of the sipp start
        caller = sipp.caller(talk_s=6.0, hangup="wait", timeout_s=60)
        caller_result, handset_result = caller.wait(), handset.wait()
        caller_result.assert_ok()
        handset_result.assert_ok()
        assert handset_result.received("INVITE "), handset_result.describe()
        svc.wait_state(lambda s: _taker(s, NEW)["calls_taken"] == 1, 10, f"{NEW} took the call")
        wait_clean(asterisk_instance)
        assert PASSWORD not in svc.log_path.read_text(errors="replace")

        # Idempotent: a restarted service finds the handset as it pushed it.
        svc.stop()
        again = service(extra=_config((NEW,), {NEW: PASSWORD}))
        second = _wait_synced(again, 1)
        assert (second["created"], second["updated"], second["unchanged"]) == ([], [], 1), second

        # Removed from the centre's configuration (the API; it is data in PostgreSQL): deleted
        # at the next connect. A password for a pjsip.conf handset changes nothing in Asterisk.
        version = again.get(f"/api/takers/{NEW}")["version"]
        status, body = again.post(f"/api/takers/{NEW}?version={version}", method="DELETE")
        assert status == 200, body
        again.stop()
        damkar_auth = _object(asterisk_instance, "auth", "disp-damkar")
        third = service(
            extra=_config((NEW,), {NEW: PASSWORD, "disp-damkar": "never-applied-secret"})
        )
        removed = _wait_synced(third, 1)
        assert removed["deleted"] == [NEW] and removed["static"] == ["disp-damkar"], removed
        assert _object(asterisk_instance, "endpoint", NEW) is None
        assert _object(asterisk_instance, "aor", NEW) is None
        assert _object(asterisk_instance, "auth", NEW) is None
        assert _object(asterisk_instance, "auth", "disp-damkar") == damkar_auth

        assert _asterisk_pid(asterisk_instance) == pid  # never restarted
        assert _files_digest(asterisk_instance) == files  # no file edited

    def test_handsets_are_pushed_again_when_the_service_reconnects_after_an_asterisk_restart(
        self,
        service: ServiceFactory,
        sipp: SippRunner,
        asterisk_instance: AsteriskInstance,
    ) -> None:
        """Asterisk restarts having lost the provisioned handset; on the ARI reconnect the
        service creates it again and the handset registers with its password."""
        svc = service(extra=_config((NEW,), {NEW: PASSWORD}))
        assert _wait_synced(svc, 1)["created"] == [NEW]
        asterisk_instance.cli("database deltree siaga-handsets")  # Asterisk's copy is lost
        assert _object(asterisk_instance, "endpoint", NEW) is None

        restart = subprocess.run(
            [str(REPO_ROOT / "scripts" / "asterisk-instance.sh"), "restart", "test"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert restart.returncode == 0, restart.stderr
        svc.wait_until(lambda h: h["ari_connected"] and h["ari_reconnects"] >= 1, 30, "reconnected")
        pushed = _wait_synced(svc, 2)
        assert pushed["created"] == [NEW], pushed
        assert _object(asterisk_instance, "endpoint", NEW) is not None
        registered = sipp.register(user=NEW, password=PASSWORD).wait()
        registered.assert_ok()
        svc.wait_state(lambda s: _taker(s, NEW)["reachable"], 10, f"{NEW} registered")
