"""sipp processes of the bench (callers and handsets) and the per-call records in their logs.

Every sipp runs in its own session, is tracked by pid and bounded by sipp's ``-timeout`` and a
wall-clock wait; it is stopped by that pid only (SIGUSR1 first: sipp then ends its open calls
and exits normally, writing its logs).
"""

from __future__ import annotations

import csv
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .profile import SCENARIO_DIR

TICK_S = 0.1  # one handset talk tick: a recv with a 100 ms timeout


class SippError(RuntimeError):
    """sipp could not be started or did not finish in time."""


def sipp_binary() -> str:
    found = shutil.which("sipp")
    if not found:
        raise SippError("sipp is not installed (apt-get install -y sip-tester)")
    return found


def _tracing(workdir: Path) -> list[str]:
    return [
        "-trace_logs",
        "-log_file",
        str(workdir / "calls.log"),
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_stat",
        "-stf",
        str(workdir / "stat.csv"),
        "-fd",
        "1",
        "-nostdin",
    ]


@dataclass
class Sipp:
    """One sipp process."""

    name: str
    args: list[str]
    workdir: Path
    bound_s: float
    proc: subprocess.Popen[bytes] | None = None
    returncode: int | None = None

    def start(self) -> Sipp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "command.txt").write_text(" ".join(self.args) + "\n", encoding="utf-8")
        with (self.workdir / "screen.txt").open("wb") as screen:
            self.proc = subprocess.Popen(  # noqa: S603 - sipp with our own arguments
                self.args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def wait_listening(self, addr: str, port: int, within_s: float = 10.0) -> None:
        needle = f"{addr}:{port}"
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SippError(f"sipp {self.name} exited early: {self.screen()[-1500:]}")
            out = subprocess.run(
                ["ss", "-H", "-lun"],  # noqa: S607 - iproute2 on PATH
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if needle in out:
                return
            time.sleep(0.05)
        raise SippError(f"sipp {self.name} did not bind {needle} within {within_s}s")

    def wait(self, timeout_s: float | None = None) -> int:
        assert self.proc is not None, "start() first"
        try:
            self.returncode = self.proc.wait(
                timeout=self.bound_s if timeout_s is None else timeout_s
            )
        except subprocess.TimeoutExpired:
            self.stop()
        assert self.returncode is not None
        return self.returncode

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGUSR1 (sipp ends gracefully and writes its logs), then SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        for sig, wait_s in (
            (signal.SIGUSR1, grace_s),
            (signal.SIGTERM, 3.0),
            (signal.SIGKILL, 5.0),
        ):
            if self.proc.poll() is not None:
                break
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
        self.returncode = self.proc.wait(timeout=5)

    def screen(self) -> str:
        path = self.workdir / "screen.txt"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def stat_counts(self) -> dict[str, int]:
        """sipp's own cumulative counters (last row of -trace_stat): a cross-check only."""
        path = self.workdir / "stat.csv"
        if not path.exists():
            return {}
        with path.open(encoding="utf-8", errors="replace", newline="") as fh:
            rows = list(csv.DictReader(fh, delimiter=";"))
        if not rows:
            return {}
        out: dict[str, int] = {}
        for key in ("TotalCallCreated", "SuccessfulCall(C)", "FailedCall(C)"):
            try:
                out[key] = int(rows[-1].get(key) or 0)
            except ValueError:
                out[key] = -1
        return out


def start_handsets(
    ports: list[int],
    addr: str,
    workdir: Path,
    *,
    talk_s: float,
    bound_s: float,
    procs: list[Sipp],
) -> list[Sipp]:
    """One handset sipp per port, each answering any number of calls at once. Every process
    started is appended to ``procs`` at once, so the caller can stop them whatever fails."""
    binary = sipp_binary()
    started: list[Sipp] = []
    for port in ports:
        wd = workdir / f"handset-{port}"
        args = [
            binary,
            "-sf",
            str(SCENARIO_DIR / "handset.xml"),
            "-i",
            addr,
            "-p",
            str(port),
            "-mi",
            addr,
            "-mp",
            str(40000 + (port % 1000) * 10),  # sipp binds mp, mp+2: keep 10 apart
            "-set",
            "talk_ticks",
            str(max(1, round(talk_s / TICK_S))),
            "-timeout",
            f"{int(bound_s)}s",
            "-max_recv_loops",
            "10000",
            *_tracing(wd),
        ]
        sp = Sipp(f"handset-{port}", args, wd, bound_s)
        procs.append(sp)
        started.append(sp.start())
    for sp, port in zip(started, ports, strict=True):
        sp.wait_listening(addr, port)
    return started


def start_caller(
    *,
    target: str,
    addr: str,
    port: int,
    media_port: int,
    prefix: str,
    rate: float,
    calls: int,
    workdir: Path,
    bound_s: float,
) -> Sipp:
    """The bench caller: ``calls`` calls of 112 at ``rate`` calls/s from ``addr:port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "burst.ulaw").write_bytes(b"\xff" * 1600)  # 200 ms of PCMU silence
    args = [
        sipp_binary(),
        "-sf",
        str(SCENARIO_DIR / "caller.xml"),
        "-i",
        addr,
        "-p",
        str(port),
        "-mi",
        addr,
        "-mp",
        str(media_port),
        "-s",
        "112",
        "-set",
        "prefix",
        prefix,
        "-r",
        f"{rate:g}",
        "-rp",
        "1000",
        "-m",
        str(calls),
        "-l",
        "100000",
        "-timeout",
        f"{int(bound_s)}s",
        "-timeout_error",
        "-max_recv_loops",
        "10000",
        *_tracing(workdir),
        target,
    ]
    return Sipp("caller", args, workdir, bound_s + 15).start()


# ---- per-call records from the scenario logs -------------------------------------------


@dataclass
class CallerCall:
    """One call as the caller saw it (epoch timestamps from sipp's [timestamp])."""

    number: str
    invite: float
    ok: float | None = None
    rejected: str | None = None
    end: str | None = None
    end_at: float | None = None


@dataclass
class HandsetCall:
    """One offer as a handset saw it."""

    number: str
    handset: str
    ring: float
    ack: float | None = None
    end: str | None = None
    end_at: float | None = None


@dataclass
class Logs:
    callers: dict[str, CallerCall] = field(default_factory=dict)
    handsets: dict[str, list[HandsetCall]] = field(default_factory=dict)
    unmatched_handset_lines: int = 0


@dataclass(frozen=True)
class Event:
    """``bench <kind> [<sub>] <date>\t<time>\t<epoch> <args...>``, one scenario log line."""

    kind: str
    sub: str
    at: float
    args: list[str]


def events(path: Path) -> list[Event]:
    """The bench lines of one sipp ``-trace_logs`` file."""
    out: list[Event] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0].startswith("bench "):
            continue
        head, tail = parts[0].split(), parts[2].split()
        if len(head) < 3 or not tail:
            continue
        try:
            at = float(tail[0])
        except ValueError:
            continue
        out.append(Event(head[1], head[2] if len(head) > 3 else "", at, tail[1:]))
    return out


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def read_logs(caller_log: Path, handset_logs: Iterable[Path]) -> Logs:
    """Join what the caller and the handsets logged, call by call (by caller number).

    The PBX may present the number as dialled, as +62... or as 62...: handset lines are
    matched on the digits after the leading 0 of the caller's number."""
    logs = Logs()
    for ev in events(caller_log):
        if not ev.args:
            continue
        number = ev.args[0]
        if ev.kind == "inv":
            logs.callers[number] = CallerCall(number, ev.at)
            continue
        call = logs.callers.get(number)
        if call is None:
            continue
        if ev.kind == "ok":
            call.ok = ev.at
        elif ev.kind == "rej":
            call.rejected = ev.args[1] if len(ev.args) > 1 else "?"
        elif ev.kind == "end":
            call.end, call.end_at = ev.sub, ev.at
    by_tail = {_digits(n)[1:]: n for n in logs.callers}
    open_calls: dict[tuple[Path, str], HandsetCall] = {}
    for path in handset_logs:
        for ev in events(path):
            digits = _digits(ev.args[0]) if ev.args else ""
            matched = next(
                (by_tail[digits[i:]] for i in range(min(len(digits), 4)) if digits[i:] in by_tail),
                None,
            )
            if matched is None:
                logs.unmatched_handset_lines += 1
                continue
            key = (path, matched)
            if ev.kind == "ring":
                hc = HandsetCall(matched, ev.args[1] if len(ev.args) > 1 else "?", ev.at)
                logs.handsets.setdefault(matched, []).append(hc)
                open_calls[key] = hc
            elif ev.kind == "ack" and key in open_calls:
                open_calls[key].ack = ev.at
            elif ev.kind == "end" and key in open_calls:
                open_calls[key].end, open_calls[key].end_at = ev.sub, ev.at
    return logs
