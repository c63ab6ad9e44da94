"""Fixtures for end-to-end tests: a real Asterisk 22 (test profile), sipp callers
and handsets, a real PostgreSQL database, and the real service as a subprocess.

Nothing here skips: when Asterisk, sipp or PostgreSQL cannot be provisioned the
test fails and says why.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import AsteriskInstance, asterisk_fixture, sipp_fixture
from harness.service import ServiceFactory, ServiceProcess, free_port, service_env

from pgtools import create_database, drop_database, dsn_for, run_sync
from siaga_pbx.incidents import migrate

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
