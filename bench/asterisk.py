"""The bench Asterisk instance: start/stop through scripts/asterisk-instance.sh, the bench-only
configuration (extra handsets, app_queue, the Queue() dialplan), ARI and /proc readings.

The shared templates (asterisk/*.conf) are never changed. After ``asterisk-instance.sh start
bench`` rendered and started the instance, this module writes the files of asterisk/bench/
into the instance's own etc dir, appends ``#tryinclude`` lines to that instance's rendered
pjsip.conf and extensions.conf, and reloads: only the bench instance ever sees them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from .profile import BENCH_ASTERISK_DIR, INSTANCE_SCRIPT, BenchProfile, Handset

DEFAULT_ROOT = Path("/var/cache/siaga-pbx/asterisk-root")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The bench cannot go on; the message says why."""


def proc_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (/proc/<pid>/stat fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid: int, key: str) -> int:
    """A ``kB`` value (VmHWM, VmRSS ...) of /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


@dataclass
class Leftovers:
    """What a run left in Asterisk after it ended, and what the sweep removed."""

    channels: int = 0
    bridges: int = 0
    waited_s: float = 0.0
    remaining: int = 0  # channels still up even after the sweep


class BenchAsterisk:
    """The Asterisk instance of the bench profile."""

    def __init__(self, profile: BenchProfile) -> None:
        self.profile = profile
        root = Path(os.environ.get("SIAGA_ASTERISK_ROOT", str(DEFAULT_ROOT)))
        self.inst_dir = root / profile.values["INSTANCE_DIR"].lstrip("/")
        self.etc_dir = self.inst_dir / "etc"
        self.recording_dir = self.inst_dir / "spool" / "recording"
        self.pidfile = self.inst_dir / "run" / "siaga-instance.pid"
        token = f"{profile.ari_user}:{profile.ari_password}".encode()
        self._auth = "Basic " + base64.b64encode(token).decode()
        self.started_here = False

    # ---- lifecycle -------------------------------------------------------------------

    def _script(self, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603 - our own script, fixed arguments
            [str(INSTANCE_SCRIPT), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def is_running(self) -> bool:
        return self._script("status", self.profile.name, timeout=30).returncode == 0

    def start(self, handsets: list[Handset]) -> None:
        """Start the instance (if it is not running) and install the bench configuration."""
        was_running = self.is_running()
        proc = self._script("start", self.profile.name)
        if proc.returncode != 0:
            raise BenchError(f"asterisk-instance.sh start bench failed:\n{proc.stderr[-3000:]}")
        self.started_here = not was_running
        self.install(handsets)

    def stop(self) -> None:
        proc = self._script("stop", self.profile.name, timeout=120)
        if proc.returncode != 0:
            raise BenchError(f"asterisk-instance.sh stop bench failed:\n{proc.stderr[-3000:]}")

    def cli(self, command: str) -> str:
        proc = self._script("cli", self.profile.name, command, timeout=60)
        if proc.returncode != 0:
            raise BenchError(f"asterisk -rx {command!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def pid(self) -> int:
        return int(self.pidfile.read_text(encoding="ascii").strip())

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid())

    # ---- the bench-only configuration --------------------------------------------------

    def _render(self, name: str, extra: dict[str, str]) -> str:
        text = (BENCH_ASTERISK_DIR / name).read_text(encoding="utf-8")
        return Template(text).substitute({**self.profile.values, **extra})

    def pjsip_conf(self, handsets: list[Handset]) -> str:
        text = (BENCH_ASTERISK_DIR / "pjsip.conf").read_text(encoding="utf-8")
        head, _, rest = text.partition(";@handset\n")
        block, _, tail = rest.partition(";@end\n")
        parts = [Template(head).substitute(self.profile.values)]
        for h in handsets:
            parts.append(Template(block).substitute(NAME=h.name, ADDR=h.addr, PORT=str(h.port)))
        parts.append(tail)
        return "".join(parts)

    def queues_conf(self, handsets: list[Handset]) -> str:
        members = "".join(f"member => {h.endpoint}\n" for h in handsets)
        return self._render("queues.conf", {}) + members

    def install(self, handsets: list[Handset]) -> None:
        """Write the bench files into this instance's etc dir, include them, reload."""
        bench_etc = self.etc_dir / "bench"
        bench_etc.mkdir(parents=True, exist_ok=True)
        (bench_etc / "pjsip.conf").write_text(self.pjsip_conf(handsets), encoding="utf-8")
        (bench_etc / "extensions.conf").write_text(
            (BENCH_ASTERISK_DIR / "extensions.conf").read_text(encoding="utf-8"),
            encoding="utf-8",
        )
        (self.etc_dir / "queues.conf").write_text(self.queues_conf(handsets), encoding="utf-8")
        for conf in ("pjsip.conf", "extensions.conf"):
            path = self.etc_dir / conf
            line = f'#tryinclude "bench/{conf}"'
            text = path.read_text(encoding="utf-8")
            if line not in text:
                path.write_text(f"{text.rstrip()}\n\n; added by bench/ (bench only)\n{line}\n")
        self.cli("module reload res_pjsip.so")
        self.cli("dialplan reload")
        if "app_queue.so" in self.cli("module show like app_queue.so"):
            self.cli("module reload app_queue.so")
        else:
            self.cli("module load app_queue.so")
        self._check_installed(handsets)

    def _check_installed(self, handsets: list[Handset]) -> None:
        deadline = time.monotonic() + 20
        missing: list[str] = []
        while time.monotonic() < deadline:
            _, eps = self.ari("GET", "/endpoints/PJSIP")
            names = {e["resource"] for e in (eps or [])}
            missing = [h.name for h in handsets if h.name not in names]
            if not missing and "bench-queue-caller" in names:
                break
            time.sleep(0.5)
        else:
            raise BenchError(f"bench endpoints not loaded: {missing[:5]}... (see messages.log)")
        shown = self.cli("queue show bench-112")
        members = shown.count("PJSIP/bench-h")
        if members != len(handsets):
            raise BenchError(
                f"queue bench-112 has {members} members, not {len(handsets)}:\n{shown}"
            )
        plan = self.cli("dialplan show bench-queue")
        if "Queue(bench-112" not in plan:
            raise BenchError(f"context bench-queue not loaded:\n{plan}")

    # ---- ARI -------------------------------------------------------------------------

    def ari(self, method: str, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        req = urllib.request.Request(  # noqa: S310 - http://127.0.0.1 from the profile
            f"{self.profile.ari_url}/ari{path}",
            method=method,
            headers={"Authorization": self._auth},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - our URL
                body = resp.read()
                return resp.status, (json.loads(body) if body else None)
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def channels(self) -> list[dict[str, Any]]:
        _, chans = self.ari("GET", "/channels")
        return list(chans or [])

    def bridges(self) -> list[dict[str, Any]]:
        _, bridges = self.ari("GET", "/bridges")
        return list(bridges or [])

    def sweep(self, wait_s: float = 30.0) -> Leftovers:
        """Wait until no channel is left; hang up and destroy what a run left behind.

        Returns what had to be removed (all zero after a clean run)."""
        t0 = time.monotonic()
        left = Leftovers()
        while time.monotonic() - t0 < wait_s:
            if not self.channels() and not self.bridges():
                left.waited_s = time.monotonic() - t0
                return left
            time.sleep(0.25)
        left.waited_s = time.monotonic() - t0
        for chan in self.channels():
            left.channels += 1
            self.ari("DELETE", f"/channels/{chan['id']}")
        for bridge in self.bridges():
            left.bridges += 1
            self.ari("DELETE", f"/bridges/{bridge['id']}")
        deadline = time.monotonic() + 10
        while (self.channels() or self.bridges()) and time.monotonic() < deadline:
            time.sleep(0.25)
        left.remaining = len(self.channels())
        return left

    def clear_recordings(self) -> int:
        """Delete the bench instance's recordings (the bench makes thousands); returns count."""
        count = 0
        if self.recording_dir.is_dir():
            for f in self.recording_dir.iterdir():
                if f.is_file():
                    f.unlink()
                    count += 1
        return count
