"""Suite-wide fixtures: the REAL PostgreSQL.

Each test module gets its own freshly created database with a random name
(``migrated_dsn``), dropped when the module finishes; tests that need an empty
or private database use ``fresh_dsn``. If PostgreSQL is unreachable the
fixtures try to start the local cluster, and FAIL the test if that does not
help: these tests never skip.

Admin work (CREATE/DROP DATABASE) runs ``asyncio.run`` in a helper thread so
it never touches the event loop pytest-asyncio gives the tests.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

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
