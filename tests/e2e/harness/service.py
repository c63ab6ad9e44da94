"""Run the real service (``siaga-pbx run``) as a subprocess for end-to-end tests.

The process is configured through ``SIAGA_*`` environment variables only, as
production would be, talks to the test Asterisk instance and a fresh
PostgreSQL database, and is always stopped by its own pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "e2e-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    env: dict[str, str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log_file: Any = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_connected: bool = True, timeout: float = 20.0) -> None:
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "siaga_pbx", "run"],
            env=self.env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        if wait_connected:
            self.wait_until(lambda h: bool(h.get("ari_connected")), timeout, "ARI connected")

    def health(self) -> dict[str, Any]:
        return dict(self.get("/healthz", auth=False))

    def get(self, path: str, *, auth: bool = True) -> Any:
        req = urllib.request.Request(self.url + path)
        if auth:
            req.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def post(self, path: str, body: Any = None, *, method: str = "POST") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {TOKEN}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def wait_until(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"service exited with {self.proc.returncode} while waiting for {what}; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                last = self.health()
                if check(last):
                    return dict(last)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; last health {last}\n{self.log_tail()}")

    def state(self) -> dict[str, Any]:
        return dict(self.get("/api/state"))

    def wait_state(self, check: Any, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        snap: dict[str, Any] = {}
        while time.monotonic() < deadline:
            snap = self.state()
            if check(snap):
                return snap
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; state {json.dumps(snap)[:2000]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code = self.proc.returncode
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def service_env(
    *,
    ari_url: str,
    ari_password: str,
    dsn: str,
    state_dir: Path,
    recording_dir: Path,
    port: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA_")}
    env.update(
        {
            "SIAGA_PROFILE": "lab",
            "SIAGA_LOG_LEVEL": "DEBUG",
            "SIAGA_ARI__URL": ari_url,
            "SIAGA_ARI__PASSWORD": ari_password,
            "SIAGA_DATABASE_DSN": dsn,
            "SIAGA_STATE_DIR": str(state_dir),
            "SIAGA_RECORDING_DIR": str(recording_dir),
            "SIAGA_HTTP__PORT": str(port),
            "SIAGA_HTTP__TOKENS": json.dumps({TOKEN: "admin"}),
        }
    )
    env.update(extra or {})
    return env


ServiceFactory = Callable[..., ServiceProcess]
