"""Path B: the real service (``python -m siaga_pbx run``), configured by SIAGA_* variables only,
on a fresh PostgreSQL database, against the bench Asterisk instance."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from .asterisk import BenchError, proc_cpu_s, proc_status_kb
from .profile import REPO, BenchProfile, Handset

PG_DSN = os.environ.get("SIAGA_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
TOKEN = "bench-admin-token"  # noqa: S105 - a local, throw-away API token
QUEUE = "main"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Database:
    """A throw-away database on the local PostgreSQL, migrated by the service's own command."""

    def __init__(self) -> None:
        self.name = f"siaga_bench_{uuid.uuid4().hex[:12]}"
        self.dsn = f"{PG_DSN}/{self.name}"

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(f"{PG_DSN}/postgres", timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> None:
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


def queues_json(profile: BenchProfile) -> str:
    """The siaga queue equivalent to the bench's app_queue queue (asterisk/bench/queues.conf)."""
    return json.dumps(
        [
            {
                "name": QUEUE,
                "strategy": "leastrecent",
                "ring_timeout_s": float(profile.ring_timeout_s),
                "retry_delay_s": float(profile.retry_s),
                "wrapup_s": 0.0,
                "overflow": {"after_s": None, "queue": "", "dial": "", "when_no_takers": False},
            }
        ]
    )


def takers_json(handsets: list[Handset]) -> str:
    return json.dumps([{"id": h.name, "endpoint": h.endpoint, "queues": [QUEUE]} for h in handsets])


class Service:
    """One ``siaga_pbx run`` process (a fresh one per path-B run, so VmHWM is per run)."""

    def __init__(
        self,
        profile: BenchProfile,
        handsets: list[Handset],
        dsn: str,
        workdir: Path,
        recording_dir: Path,
        *,
        log_level: str = "INFO",
        event_loop: str = "uvloop",
    ) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.log_path = workdir / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA_")}
        env.update(
            {
                "SIAGA_PROFILE": "lab",
                "SIAGA_LOG_LEVEL": log_level,
                "SIAGA_EVENT_LOOP": event_loop,
                "SIAGA_ARI__URL": profile.ari_url,
                "SIAGA_ARI__USERNAME": profile.ari_user,
                "SIAGA_ARI__PASSWORD": profile.ari_password,
                "SIAGA_DATABASE_DSN": dsn,
                "SIAGA_STATE_DIR": str(workdir / "state"),
                "SIAGA_RECORDING_DIR": str(recording_dir),
                "SIAGA_HTTP__PORT": str(self.port),
                "SIAGA_HTTP__TOKENS": json.dumps({TOKEN: "admin"}),
                "SIAGA_QUEUES": queues_json(profile),
                "SIAGA_TAKERS": takers_json(handsets),
                "SIAGA_DEFAULT_QUEUE": QUEUE,
                "PYTHONPATH": str(REPO / "src"),
            }
        )
        self.env = env

    def migrate(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "siaga_pbx", "migrate"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise BenchError(f"siaga_pbx migrate failed: {proc.stderr[-2000:]}")

    def start(self, n_takers: int, timeout_s: float = 60.0) -> None:
        """Start and wait until ARI is connected and every taker is available."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "siaga_pbx", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"siaga_pbx exited with {self.proc.returncode}: {self.tail()}")
            try:
                if self.get("/healthz").get("ari_connected"):
                    last = self.get("/api/state")
                    ready = [
                        t
                        for t in last["takers"]
                        if t["status"] == "available" and not t["blocked"] and not t["in_use"]
                    ]
                    if len(ready) == n_takers:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            time.sleep(0.2)
        raise BenchError(f"siaga_pbx not ready in {timeout_s}s: {str(last)[:500]}\n{self.tail()}")

    def get(self, path: str) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - our local URL
            return json.loads(resp.read())

    def inbox_depth(self) -> float | None:
        """The service's own ``siaga_inbox_depth`` gauge (events waiting for the consumer)."""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - our local URL
                text = resp.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        for line in text.splitlines():
            if line.startswith("siaga_inbox_depth "):
                return float(line.split()[1])
        return None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("service not started")
        return self.proc.pid

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def peak_rss_kb(self) -> int:
        return proc_status_kb(self.pid, "VmHWM")

    def idle(self) -> bool:
        """No caller waiting or connected in the service's own state. A service
        too busy to answer within the request's timeout is not idle."""
        try:
            state = self.get("/api/state")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return all(not q["waiting"] and not q["connected"] for q in state["queues"])

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def log_errors(self) -> list[str]:
        """Log lines at warning level or worse (the JSON logs carry a ``level``)."""
        out: list[str] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if "Traceback" in line or "Error" in line:
                    out.append(line)
                continue
            if isinstance(rec, dict) and rec.get("level") in ("warning", "error", "critical"):
                out.append(line)
        return out
