"""A private PostgreSQL server that a test may stop and start for real.

Outage tests must not stop the machine's shared PostgreSQL, so they get their
own server: ``initdb`` into a temporary directory (as the ``postgres`` OS
user, since PostgreSQL refuses to run as root), on a free port, trust auth on
loopback. ``stop()`` is a real fast shutdown: connections are refused until
``start()``.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .service import free_port


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        pytest.fail("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def _as_postgres(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class PrivatePostgres:
    datadir: Path
    port: int
    bindir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        out = _as_postgres(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.datadir / "server.log"),
            "-o",
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.datadir}",
            "-w",
            "start",
        )
        if out.returncode != 0:
            pytest.fail(f"private PostgreSQL did not start: {out.stdout}{out.stderr}")

    def stop(self) -> None:
        out = _as_postgres(
            str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"
        )
        if out.returncode != 0:
            raise RuntimeError(f"private PostgreSQL did not stop: {out.stdout}{out.stderr}")

    def running(self) -> bool:
        return (
            _as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status").returncode
            == 0
        )


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A fresh PostgreSQL server of our own, stopped and removed afterwards."""
    bindir = _pg_bin()
    parent = Path(tempfile.mkdtemp(prefix="siaga-pg-"))
    shutil.chown(parent, "postgres", "postgres")
    datadir = parent / "data"
    init = _as_postgres(
        str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8"
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stdout}{init.stderr}")
    server = PrivatePostgres(datadir, free_port(), bindir)
    server.start()
    try:
        yield server
    finally:
        if server.running():
            server.stop()
        time.sleep(0.1)
        shutil.rmtree(parent, ignore_errors=True)
