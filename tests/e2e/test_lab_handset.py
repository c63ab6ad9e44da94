"""The lab profile's claim: sipp can play a registered, qualified handset and take a 112 call.

Lab handsets have no static contact: they REGISTER and Asterisk qualifies them with OPTIONS
every 30 s; a handset that does not answer the OPTIONS is unreachable, and the service never
rings it. tests/e2e/scenarios/lab_handset.xml (with lab_handset_calls.xml) answers them.

These tests run on the ``lab-check`` profile: the lab profile on its own ports (the first test
checks that nothing else differs), so a `make run` lab on this machine is never touched.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import AsteriskInstance, SippRunner, asterisk_fixture, read_profile
from harness.service import ServiceFactory, ServiceProcess, free_port, service_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# The keys lab-check.env may change: where the instance lives and which ports it binds.
PLACEMENT_KEYS = {
    "PROFILE",
    "INSTANCE_DIR",
    "SYSTEM_NAME",
    "SIP_PORT",
    "RTP_START",
    "RTP_END",
    "HTTP_PORT",
}

lab_check = asterisk_fixture("lab-check", name="lab_check")


@pytest.fixture
def lab_sipp(lab_check: AsteriskInstance, tmp_path: Path) -> Iterator[SippRunner]:
    """sipp against the lab-check Asterisk; every process it started is killed afterwards."""
    runner = SippRunner(lab_check, tmp_path / "sipp")
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture
def lab_service(
    lab_check: AsteriskInstance, e2e_dsn: str, tmp_path: Path
) -> Iterator[ServiceFactory]:
    """The real service on the lab-check Asterisk, stopped by its pid afterwards."""
    started: list[ServiceProcess] = []

    def start() -> ServiceProcess:
        port = free_port()
        env = service_env(
            ari_url=lab_check.ari_url,
            ari_password=lab_check.ari_password,
            dsn=e2e_dsn,
            state_dir=tmp_path / "state",
            recording_dir=lab_check.recording_dir,
            port=port,
        )
        proc = ServiceProcess(env, port, tmp_path / "service.log")
        started.append(proc)
        proc.start()
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGTERM)


def _taker(state: dict[str, Any], taker_id: str) -> dict[str, Any]:
    return next(t for t in state["takers"] if t["id"] == taker_id)


def test_lab_check_profile_is_the_lab_on_other_ports() -> None:
    """lab-check.env equals lab.env except for the instance's placement and ports."""
    lab = read_profile("lab")
    check = read_profile("lab-check")
    assert set(lab) == set(check)
    differing = {k for k in lab if lab[k] != check[k]}
    assert differing <= PLACEMENT_KEYS, {k: (lab[k], check[k]) for k in differing - PLACEMENT_KEYS}
    assert lab["AOR_QUALIFY_FREQUENCY"] != "0"  # lab handsets are qualified: the point of this
    assert all(lab[k] == "" for k in lab if k.startswith("CONTACT_"))  # and register


def test_lab_handset_answers_qualify_and_takes_a_call(
    lab_check: AsteriskInstance, lab_service: ServiceFactory, lab_sipp: SippRunner
) -> None:
    """A registered sipp lab handset answers qualify OPTIONS, is reachable and takes a 112 call."""
    values = lab_check.values
    svc = lab_service()
    # Nothing answers for taker1 yet. A contact an earlier, aborted run left
    # registered survives in Asterisk's astdb; qualify finds it dead within
    # one period plus its timeout (5 + 3 s), so wait for that, never assume it.
    svc.wait_state(lambda s: not _taker(s, "taker1")["reachable"], 20, "taker1 unreachable")

    handset = lab_sipp.lab_handset(
        5171, user="taker1", password=values["SECRET_TAKER1"], talk_s=3.0, hangup="bye"
    )
    svc.wait_state(lambda s: _taker(s, "taker1")["reachable"], 15, "taker1 reachable")
    contacts = lab_check.cli("pjsip show contacts")
    assert any(
        "taker1/sip:taker1@127.0.0.1:5171" in ln and "Avail" in ln for ln in contacts.splitlines()
    ), contacts

    caller = lab_sipp.lab_caller(
        user="lab-caller", password=values["SECRET_LAB_CALLER"], hangup="wait", timeout_s=60
    )
    caller_result = caller.wait()
    handset_result = handset.wait()

    caller_result.assert_ok()
    handset_result.assert_ok()
    assert handset_result.ended_by == ["local"], handset_result.describe()
    assert caller_result.ended_by == ["remote"], caller_result.describe()
    assert handset_result.received("OPTIONS "), handset_result.describe()
    log = handset_result.log_text
    assert "siaga: qualify answered" in log, handset_result.describe()
    assert "siaga: unregistered taker1 after 1" in log, handset_result.describe()
    invites = handset_result.received("INVITE ")
    assert invites, handset_result.describe()
    aborted = [ln for ln in handset_result.error_text.splitlines() if "Aborting" in ln]
    assert not aborted, handset_result.describe()
    svc.wait_state(
        lambda s: _taker(s, "taker1")["calls_taken"] == 1 and not _taker(s, "taker1")["reachable"],
        10,
        "taker1 took the call and unregistered",
    )
