"""Run our sipp scenarios (tests/e2e/scenarios) as bounded subprocesses and read their results.

Every sipp process is started in its own session, tracked by pid, bounded by sipp's own
``-timeout`` and by a wall-clock wait, and killed (by that pid only) in teardown.

Exit codes of sipp 3.6: 0 all calls successful, 1 at least one call failed, 97 stopped by an
internal command, 99 normal exit without calls processed, 255/-1 fatal error.
"""

from __future__ import annotations

import csv
import itertools
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from .asterisk import REPO_ROOT, AsteriskInstance

SCENARIO_DIR = REPO_ROOT / "tests" / "e2e" / "scenarios"
TONE_A_HZ = 700  # the caller's tone
TONE_B_HZ = 1300  # the handsets' tone
TICK_S = 0.1  # one scenario tick (a recv with a 100 ms timeout; ~105 ms in practice)

Hangup = Literal["bye", "wait"]
HandsetMode = Literal["answer", "noanswer", "busy"]

_media_ports = itertools.count(16000, 20)
_caller_ports = itertools.count(5200)


class SippError(RuntimeError):
    """sipp could not be started or did not finish in time."""


def sipp_binary() -> str:
    """Path of sipp; installs Debian's sip-tester when it is missing."""
    found = shutil.which("sipp")
    if found:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "sip-tester"],
        check=False,
        capture_output=True,
        timeout=600,
    )
    found = shutil.which("sipp")
    if not found:
        raise SippError("sipp is not installed and `apt-get install -y sip-tester` failed")
    return found


def make_tone(path: Path, freq_hz: int, seconds: float = 60.0) -> Path:
    """Write a raw 8 kHz mu-law sine tone (what sipp's rtp_stream sends as PCMU)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "8000",
            "-c",
            "1",
            "-t",
            "ul",
            str(path),
            "synth",
            f"{seconds}",
            "sine",
            f"{freq_hz}",
            "vol",
            "0.5",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


@dataclass
class SippResult:
    """The outcome of one sipp run."""

    name: str
    returncode: int
    successful_calls: int
    failed_calls: int
    log_text: str
    error_text: str
    messages_text: str
    screen_text: str
    workdir: Path

    @property
    def ok(self) -> bool:
        """sipp exited 0: every call it handled followed the scenario to the end."""
        return self.returncode == 0 and self.failed_calls == 0 and self.successful_calls > 0

    @property
    def ended_by(self) -> list[str]:
        """How each call ended, from the scenario's log: local, remote, cancel or busy."""
        marker = "siaga: ended-by "
        return [
            line.split(marker, 1)[1].strip()
            for line in self.log_text.splitlines()
            if marker in line
        ]

    def received(self, start_line: str) -> list[str]:
        """Every SIP message sipp received whose first line starts with ``start_line``."""
        out: list[str] = []
        for chunk in self.messages_text.split("-----------------------------------------------"):
            if "message received" not in chunk:
                continue
            body = chunk.split("\n\n", 1)[1] if "\n\n" in chunk else chunk
            if body.lstrip().startswith(start_line):
                out.append(body.strip("\n"))
        return out

    def describe(self) -> str:
        """A failure report: exit code, counts, errors (without tick noise), the tail of logs."""
        errors = "\n".join(
            line for line in self.error_text.splitlines() if "receive timeout" not in line
        )
        return (
            f"sipp {self.name}: exit {self.returncode}, successful={self.successful_calls} "
            f"failed={self.failed_calls} (workdir {self.workdir})\n"
            f"--- scenario log ---\n{self.log_text[-2000:]}\n"
            f"--- errors ---\n{errors[-3000:]}\n"
            f"--- screen ---\n{self.screen_text[-1500:]}"
        )

    def assert_ok(self) -> None:
        """Fail the test with a useful report unless the run was fully successful."""
        assert self.ok, self.describe()


@dataclass
class SippProcess:
    """One running sipp; ``wait()`` collects its :class:`SippResult`."""

    name: str
    args: list[str]
    workdir: Path
    timeout_s: float
    proc: subprocess.Popen[bytes] | None = None
    result: SippResult | None = None
    _screen: Path = field(init=False)

    def __post_init__(self) -> None:
        self._screen = self.workdir / "screen.txt"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> SippProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "command.txt").write_text(" ".join(self.args) + "\n", encoding="utf-8")
        with self._screen.open("wb") as screen:
            self.proc = subprocess.Popen(
                self.args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=screen,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until_listening(
        self, port: int, host: str = "127.0.0.1", within_s: float = 5.0
    ) -> None:
        """Block until this sipp has bound its UDP SIP port (a UAS is ready for INVITEs)."""
        deadline = time.monotonic() + within_s
        needle = f"{host}:{port}"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise SippError(f"sipp {self.name} exited early:\n{self._read(self._screen)}")
            out = subprocess.run(
                ["ss", "-H", "-lun"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            if needle in out:
                return
            time.sleep(0.05)
        raise SippError(f"sipp {self.name} did not bind {needle} within {within_s}s")

    def wait(self, timeout_s: float | None = None) -> SippResult:
        """Wait (bounded) for sipp to finish; kills it when the bound passes."""
        if self.result is not None:
            return self.result
        assert self.proc is not None, "start() first"
        bound = self.timeout_s + 10.0 if timeout_s is None else timeout_s
        try:
            rc = self.proc.wait(timeout=bound)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait(timeout=10)
        self.result = self._collect(rc)
        return self.result

    def kill(self) -> None:
        """Stop this sipp (by its pid only): SIGTERM, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    @staticmethod
    def _read(path: Path) -> str:
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""

    def _collect(self, rc: int) -> SippResult:
        ok_calls, failed = _parse_stat(self.workdir / "stat.csv")
        return SippResult(
            name=self.name,
            returncode=rc,
            successful_calls=ok_calls,
            failed_calls=failed,
            log_text=self._read(self.workdir / "logs.log"),
            error_text=self._read(self.workdir / "errors.log"),
            messages_text=self._read(self.workdir / "messages.log"),
            screen_text=self._read(self._screen),
            workdir=self.workdir,
        )


def _parse_stat(path: Path) -> tuple[int, int]:
    """(successful, failed) cumulative calls from sipp's ``-trace_stat`` CSV (last row)."""
    if not path.exists():
        return 0, 0
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    if not rows:
        return 0, 0
    last = rows[-1]

    def num(key: str) -> int:
        try:
            return int(last.get(key, "0") or 0)
        except ValueError:
            return 0

    return num("SuccessfulCall(C)"), num("FailedCall(C)")


def _tracing() -> list[str]:
    return [
        "-trace_msg",
        "-message_file",
        "messages.log",
        "-trace_logs",
        "-log_file",
        "logs.log",
        "-trace_err",
        "-error_file",
        "errors.log",
        "-trace_stat",
        "-stf",
        "stat.csv",
        "-fd",
        "1",
        "-nostdin",
    ]


class SippRunner:
    """Starts our scenarios against one Asterisk instance and cleans up after them."""

    def __init__(self, instance: AsteriskInstance, workdir: Path) -> None:
        self.instance = instance
        self.workdir = workdir
        self.processes: list[SippProcess] = []
        self._binary = sipp_binary()
        self._seq = itertools.count(1)

    def _dir(self, name: str) -> Path:
        d = self.workdir / f"{next(self._seq):02d}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def handset(
        self,
        port: int,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        mode: HandsetMode = "answer",
        ring_s: float = 1.0,
        talk_s: float = 3.0,
        hangup: Hangup = "wait",
        calls: int = 1,
        timeout_s: float = 90.0,
        tone_hz: int = TONE_B_HZ,
        scenario: Path | None = None,
        variables: dict[str, str] | None = None,
    ) -> SippProcess:
        """Start a handset (UAS) on ``host:port``, ready for INVITEs when this returns.

        ``scenario`` replaces handset.xml by a variant taking the same variables plus
        ``variables`` (extra ``-set`` pairs)."""
        label = name or f"handset-{port}"
        wd = self._dir(label)
        make_tone(wd / "tone.ulaw", tone_hz)
        extra = [arg for key, value in (variables or {}).items() for arg in ("-set", key, value)]
        args = [
            self._binary,
            "-sf",
            str(scenario or SCENARIO_DIR / "handset.xml"),
            *extra,
            "-i",
            host,
            "-p",
            str(port),
            "-mi",
            host,
            "-mp",
            str(next(_media_ports)),
            "-m",
            str(calls),
            "-set",
            "mode",
            mode,
            "-set",
            "ring_ticks",
            str(max(1, round(ring_s / TICK_S))),
            "-set",
            "talk_ticks",
            str(max(1, round(talk_s / TICK_S))),
            "-set",
            "hangup",
            hangup,
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
        ]
        sp = SippProcess(label, args, wd, timeout_s).start()
        self.processes.append(sp)
        sp.wait_until_listening(port, host)
        return sp

    def caller(
        self,
        *,
        dialled: str = "112",
        from_user: str = "081234567890",
        from_name: str = "Penelepon Uji",
        pai: str | None = None,
        talk_s: float = 3.0,
        hangup: Hangup = "bye",
        name: str = "caller",
        source: str | None = None,
        port: int | None = None,
        timeout_s: float = 90.0,
        tone_hz: int = TONE_A_HZ,
    ) -> SippProcess:
        """Start one 112 call from the trunk address (``pai`` is a SIP URI, without <>)."""
        wd = self._dir(name)
        make_tone(wd / "tone.ulaw", tone_hz)
        src = source or self.instance.trunk_addr
        pai_header = f"P-Asserted-Identity: <{pai}>" if pai else "X-Siaga-No-PAI: 1"
        args = [
            self._binary,
            "-sf",
            str(SCENARIO_DIR / "caller.xml"),
            "-i",
            src,
            "-p",
            str(port or next(_caller_ports)),
            "-mi",
            src,
            "-mp",
            str(next(_media_ports)),
            "-m",
            "1",
            "-s",
            dialled,
            "-set",
            "from_user",
            from_user,
            "-set",
            "from_name",
            from_name,
            "-set",
            "pai_header",
            pai_header,
            "-set",
            "talk_ticks",
            str(max(1, round(talk_s / TICK_S))),
            "-set",
            "hangup",
            hangup,
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
            self.instance.sip_target,
        ]
        sp = SippProcess(name, args, wd, timeout_s).start()
        self.processes.append(sp)
        return sp

    def feature(
        self,
        code: str,
        *,
        user: str,
        password: str,
        port: int | None = None,
        timeout_s: float = 30.0,
    ) -> SippProcess:
        """A call taker's handset (digest auth) dials a feature code such as ``*13``."""
        wd = self._dir(f"feature-{user}")
        args = [
            self._binary,
            "-sf",
            str(SCENARIO_DIR / "feature.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port or next(_caller_ports)),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(next(_media_ports)),
            "-m",
            "1",
            "-s",
            code,
            "-au",
            user,
            "-ap",
            password,
            "-set",
            "user",
            user,
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
            self.instance.sip_target,
        ]
        sp = SippProcess(f"feature-{user}", args, wd, timeout_s).start()
        self.processes.append(sp)
        return sp

    def lab_handset(
        self,
        port: int,
        *,
        user: str,
        password: str,
        calls: int = 1,
        ring_s: float = 1.0,
        talk_s: float = 3.0,
        hangup: Hangup = "bye",
        expires_s: int = 120,
        timeout_s: float = 90.0,
        tone_hz: int = TONE_B_HZ,
    ) -> SippProcess:
        """A lab-profile handset on ``127.0.0.1:port``: it registers as ``user``, answers
        qualify OPTIONS and ``calls`` calls (lab_handset.xml), then unregisters."""
        wd = self._dir(f"lab-{user}")
        make_tone(wd / "tone.ulaw", tone_hz)
        args = [
            self._binary,
            "-sf",
            str(SCENARIO_DIR / "lab_handset.xml"),
            "-oocsf",
            str(SCENARIO_DIR / "lab_handset_calls.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(next(_media_ports)),
            "-m",
            "1",
            "-au",
            user,
            "-ap",
            password,
            "-set",
            "user",
            user,
            "-set",
            "expires",
            str(expires_s),
            "-set",
            "calls",
            str(calls),
            "-set",
            "ring_ticks",
            str(max(1, round(ring_s / TICK_S))),
            "-set",
            "talk_ticks",
            str(max(1, round(talk_s / TICK_S))),
            "-set",
            "hangup",
            hangup,
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
            self.instance.sip_target,
        ]
        sp = SippProcess(f"lab-{user}", args, wd, timeout_s).start()
        self.processes.append(sp)
        return sp

    def lab_caller(
        self,
        *,
        user: str,
        password: str,
        dialled: str = "112",
        talk_s: float = 3.0,
        hangup: Hangup = "wait",
        port: int | None = None,
        timeout_s: float = 60.0,
        tone_hz: int = TONE_A_HZ,
    ) -> SippProcess:
        """The lab softphone ``user`` dials ``dialled`` with digest auth (lab_caller.xml)."""
        wd = self._dir(f"lab-{user}")
        make_tone(wd / "tone.ulaw", tone_hz)
        args = [
            self._binary,
            "-sf",
            str(SCENARIO_DIR / "lab_caller.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port or next(_caller_ports)),
            "-mi",
            "127.0.0.1",
            "-mp",
            str(next(_media_ports)),
            "-m",
            "1",
            "-s",
            dialled,
            "-au",
            user,
            "-ap",
            password,
            "-set",
            "user",
            user,
            "-set",
            "talk_ticks",
            str(max(1, round(talk_s / TICK_S))),
            "-set",
            "hangup",
            hangup,
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
            self.instance.sip_target,
        ]
        sp = SippProcess(f"lab-{user}", args, wd, timeout_s).start()
        self.processes.append(sp)
        return sp

    def register(
        self,
        *,
        user: str,
        password: str,
        expires_s: int = 60,
        port: int | None = None,
        timeout_s: float = 20.0,
    ) -> SippProcess:
        """A handset REGISTERs as ``user`` with digest auth (register.xml); it
        succeeds only on 401 then 200, so a wrong password fails the process."""
        wd = self._dir(f"register-{user}")
        args = [
            self._binary,
            "-sf",
            str(SCENARIO_DIR / "register.xml"),
            "-i",
            "127.0.0.1",
            "-p",
            str(port or next(_caller_ports)),
            "-m",
            "1",
            "-au",
            user,
            "-ap",
            password,
            "-set",
            "user",
            user,
            "-set",
            "expires",
            str(expires_s),
            "-timeout",
            f"{int(timeout_s)}s",
            "-timeout_error",
            *_tracing(),
            self.instance.sip_target,
        ]
        sp = SippProcess(f"register-{user}", args, wd, timeout_s).start()
        self.processes.append(sp)
        return sp

    def stop_all(self) -> None:
        """Kill every sipp this runner started that is still running (by pid)."""
        for sp in self.processes:
            sp.kill()


def sipp_fixture(instance_fixture: str = "asterisk_instance", *, name: str = "sipp") -> object:
    """A function-scoped pytest fixture yielding a :class:`SippRunner` for the named instance."""

    @pytest.fixture(name=name)
    def _fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SippRunner]:
        instance: AsteriskInstance = request.getfixturevalue(instance_fixture)
        runner = SippRunner(instance, tmp_path / "sipp")
        try:
            yield runner
        finally:
            runner.stop_all()

    return _fixture
