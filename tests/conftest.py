"""Suite-wide fixtures: the REAL PostgreSQL, a real Asterisk 22 (test profile),
sipp callers and handsets, and the real service as a subprocess.

Each test module gets its own freshly created database with a random name
(``migrated_dsn``), dropped when the module finishes; tests that need an empty
or private database use ``fresh_dsn``. If PostgreSQL is unreachable the
fixtures try to start the local cluster, and FAIL the test if that does not
help: these tests never skip.

Admin work (CREATE/DROP DATABASE) runs ``asyncio.run`` in a helper thread so
it never touches the event loop pytest-asyncio gives the tests.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import AsteriskInstance, asterisk_fixture, sipp_fixture
from harness.checks import reset
from harness.pgserver import private_pg
from harness.service import ServiceFactory, ServiceProcess, free_port, service_env
from pgtools import (
    ADMIN_DSN,
    PG_USER,
    START_CLUSTER,
    create_database,
    drop_database,
    dsn_for,
    reachable,
    run_sync,
)
from siaga_pbx.incidents import migrate


@pytest.fixture(scope="session")
def pg_available() -> None:
    """PostgreSQL answers on the admin DSN (started if it was down), or the test fails."""
    if run_sync(reachable):
        return
    try:
        subprocess.run(START_CLUSTER, check=False, timeout=60, capture_output=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"PostgreSQL unreachable at {ADMIN_DSN} and cannot start it: {exc}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run_sync(reachable):
            return
        time.sleep(0.5)
    pytest.fail(f"PostgreSQL unreachable at {ADMIN_DSN}, even after {' '.join(START_CLUSTER)}")


@pytest.fixture
def fresh_dsn(pg_available: None) -> Iterator[str]:
    """DSN of a new, EMPTY database private to one test."""
    name = create_database()
    try:
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def fresh_migrated_dsn(fresh_dsn: str) -> str:
    """DSN of a new, migrated database private to one test."""
    run_sync(lambda: migrate(fresh_dsn))
    return fresh_dsn


@pytest.fixture(scope="module")
def migrated_dsn(pg_available: None) -> Iterator[str]:
    """DSN of a migrated database shared by one test module (dropped afterwards)."""
    name = create_database()
    try:
        run_sync(lambda: migrate(dsn_for(name)))
        yield dsn_for(name)
    finally:
        drop_database(name)


@pytest.fixture
def closed_port_dsn() -> str:
    """A DSN whose port refuses connections: PostgreSQL "down"."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/nowhere"


# ---- end to end ------------------------------------------------------------

__all__ = ["private_pg"]  # a fixture, re-exported for every test

asterisk_instance = asterisk_fixture("test")
sipp = sipp_fixture("asterisk_instance")


@pytest.fixture
def e2e_dsn(pg_available: None) -> Iterator[str]:
    """A fresh, migrated database for one end-to-end test."""
    name = create_database()
    dsn = dsn_for(name)
    run_sync(lambda: migrate(dsn))
    try:
        yield dsn
    finally:
        drop_database(name)


@pytest.fixture
def service(
    asterisk_instance: AsteriskInstance, e2e_dsn: str, tmp_path: Path
) -> Iterator[ServiceFactory]:
    """Start the real service against the test Asterisk; stop it (by pid) afterwards.

    Call it with ``extra={"SIAGA_...": ...}`` to change settings. A second call
    starts another process with the same state dir (a restart)."""
    reset(asterisk_instance)  # nothing a previous test left may leak into this one
    started: list[ServiceProcess] = []
    port = free_port()

    def start(
        *, extra: dict[str, str] | None = None, wait_connected: bool = True
    ) -> ServiceProcess:
        env = service_env(
            ari_url=asterisk_instance.ari_url,
            ari_password=asterisk_instance.ari_password,
            dsn=e2e_dsn,
            state_dir=tmp_path / "state",
            recording_dir=asterisk_instance.recording_dir,
            port=port,
            extra=extra,
        )
        proc = ServiceProcess(env, port, tmp_path / f"service-{len(started)}.log")
        started.append(proc)
        proc.start(wait_connected=wait_connected)
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGTERM)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under tests/e2e is marked ``e2e``."""
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
