"""Orchestrate the benchmark: both paths on the same Asterisk, interleaved per rate.

For each rate (in the order given) the two paths run back to back, alternating which goes
first (A B, B A, A B, ...), so slow drifts of the machine hit both. Every run starts from a
clean instance (no channel, no bridge: checked over ARI) and with fresh handset processes; a
path-B run also gets a fresh service process (its peak RSS is that run's).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .asterisk import BenchAsterisk, BenchError, Leftovers
from .profile import REPO, BenchProfile, Handset
from .siaga import Database, Service
from .sipp import Sipp, read_logs, start_caller, start_handsets
from .stats import judge

DEFAULT_CALLS = "5:100,10:200,25:500,50:3000"


def parse_calls(spec: str) -> list[tuple[float, int]]:
    """``RATE:CALLS,...`` -> [(rate, calls), ...]."""
    out: list[tuple[float, int]] = []
    for item in spec.split(","):
        rate, _, calls = item.strip().partition(":")
        r = float(rate)
        out.append((r, int(calls) if calls else int(r * 20)))
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "--calls", default=DEFAULT_CALLS, help=f"RATE:CALLS,... per rate (default {DEFAULT_CALLS})"
    )
    p.add_argument("--paths", default="AB", help="A = Queue(), B = siaga_pbx (default AB)")
    p.add_argument("--talk-s", type=float, default=2.0, help="handset talk time (default 2)")
    p.add_argument("--handsets", type=int, default=None, help="default: BENCH_HANDSETS")
    p.add_argument("--out-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="raw sipp/service logs (default /tmp/siaga-bench-<time>)",
    )
    p.add_argument(
        "--keep-asterisk", action="store_true", help="leave the bench Asterisk running at the end"
    )
    p.add_argument("--service-log-level", default="INFO")
    p.add_argument(
        "--service-event-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the service's event loop (setting event_loop; default: the shipped uvloop)",
    )
    p.add_argument("--settle-s", type=float, default=2.0, help="pause between runs")
    p.add_argument(
        "--profile",
        metavar="RATE:CALLS",
        default=None,
        help="after the measured runs, one extra path-B run under py-spy",
    )
    p.add_argument(
        "--sustain",
        default="50:60",
        metavar="RATE:SECONDS",
        help="the zero-failure target (default 50:60)",
    )
    return p


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.profile = BenchProfile.load()
        self.handsets: list[Handset] = self.profile.handsets(args.handsets)
        self.ast = BenchAsterisk(self.profile)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.work: Path = args.work_dir or Path(f"/tmp/siaga-bench-{stamp}")  # noqa: S108
        self.db: Database | None = None
        self.service: Service | None = None
        self.sipps: list[Sipp] = []
        self.started_at = datetime.now(UTC).isoformat(timespec="seconds")

    def log(self, msg: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

    # ---- one run -----------------------------------------------------------------------

    def one_run(  # noqa: PLR0915 - one linear recipe, easier to audit in one piece
        self, idx: int, path: str, rate: float, calls: int, *, pyspy: bool = False
    ) -> dict[str, Any]:
        wd = self.work / f"{idx:02d}-{path}-{rate:g}cps"
        wd.mkdir(parents=True, exist_ok=True)
        prefix = f"08{91 if path == 'A' else 92}{idx:02d}"
        duration = calls / rate
        bound = duration + 45 + 60
        self.log(
            f"run {idx}: path {path} ({report.PATH_LABEL[path]}), {rate:g} calls/s, {calls} calls"
        )
        self.sipps = []
        handsets = start_handsets(
            self.profile.handset_ports,
            self.profile.handset_addr,
            wd,
            talk_s=self.args.talk_s,
            bound_s=bound + 60,
            procs=self.sipps,
        )
        service: Service | None = None
        if path == "B":
            assert self.db is not None
            service = Service(
                self.profile,
                self.handsets,
                self.db.dsn,
                wd / "service",
                self.ast.recording_dir,
                log_level=self.args.service_log_level,
                # py-spy samples Python frames; uvloop's loop is C code, where
                # idle waiting and I/O look alike. The profiled run therefore
                # uses the asyncio loop, so the time lands on Python functions.
                event_loop="asyncio" if pyspy else self.args.service_event_loop,
            )
            service.start(len(self.handsets))
            self.service = service
        pre = self.ast.sweep(wait_s=5)
        ast_cpu0 = self.ast.cpu_s()
        svc_cpu0 = service.cpu_s() if service else 0.0
        t0 = time.time()
        caller = start_caller(
            target=self.profile.sip_target,
            addr=self.profile.queue_caller_addr if path == "A" else self.profile.trunk_addr,
            port=self.profile.caller_port(path),
            media_port=self.profile.caller_media_port(path),
            prefix=prefix,
            rate=rate,
            calls=calls,
            workdir=wd / "caller",
            bound_s=bound,
        )
        self.sipps.append(caller)
        spy: subprocess.Popen[bytes] | None = None
        if pyspy and service is not None:
            spy = subprocess.Popen(  # noqa: S603 - py-spy from our venv
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(service.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--idle",
                    "--duration",
                    str(int(duration) + 5),
                    "--output",
                    str(wd / "pyspy.raw"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        depths: list[float] = []
        stop_sampling = threading.Event()
        sampler: threading.Thread | None = None
        if service is not None:
            svc = service

            def sample() -> None:
                while not stop_sampling.wait(0.5):
                    d = svc.inbox_depth()
                    if d is not None:
                        depths.append(d)

            sampler = threading.Thread(target=sample, name="inbox-sampler", daemon=True)
            sampler.start()
        rc = caller.wait()
        t_calls = time.time() - t0
        stop_sampling.set()
        if sampler is not None:
            sampler.join(timeout=5)
        # Let the PBX finish what it still holds (a lagging service drains its inbox), then
        # read the CPU counters, then stop the service BEFORE sweeping: a service with a
        # backlog would otherwise ring handsets for callers the sweep already removed.
        idle_ok = True
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            idle_ok = service.idle() if service is not None else True
            if idle_ok and not self.ast.channels():
                break
            time.sleep(0.25)
        ast_cpu1 = self.ast.cpu_s()
        svc_cpu1 = service.cpu_s() if service else 0.0
        rss_kb = service.peak_rss_kb() if service else None
        if spy is not None:
            spy.wait(timeout=duration + 60)
        warnings: list[str] = []
        if service is not None:
            service.stop()
            warnings = service.log_errors()
            self.service = None
        left = self.ast.sweep(wait_s=5)
        for sp in handsets:
            sp.stop()
        self.sipps = []
        logs = read_logs(wd / "caller" / "calls.log", [h.workdir / "calls.log" for h in handsets])
        out = judge(logs, calls)
        recordings = self.ast.clear_recordings()
        result: dict[str, Any] = {
            "index": idx,
            "path": path,
            "label": report.PATH_LABEL[path],
            "rate_cps": rate,
            "calls": calls,
            "calls_wall_s": round(t_calls, 2),
            "outcomes": out.as_dict(),
            "asterisk_cpu_s": round(ast_cpu1 - ast_cpu0, 2),
            "asterisk_cpu_ms_per_call": round((ast_cpu1 - ast_cpu0) * 1000 / calls, 3),
            "service_cpu_s": round(svc_cpu1 - svc_cpu0, 2) if service else None,
            "service_cpu_ms_per_call": (
                round((svc_cpu1 - svc_cpu0) * 1000 / calls, 3) if service else None
            ),
            "service_peak_rss_mib": round(rss_kb / 1024, 1) if rss_kb is not None else None,
            "service_idle_after": idle_ok if service else None,
            "service_inbox_depth_max": max(depths) if depths else None,
            "service_inbox_depth_p50": (sorted(depths)[len(depths) // 2] if depths else None),
            "service_warnings": len(warnings),
            "service_warning_kinds": dict(Counter(_event_of(w) for w in warnings).most_common(10)),
            "leftovers_before": _left(pre),
            "leftovers_after": _left(left),
            "recordings_deleted": recordings,
            "sipp_caller_rc": rc,
            "sipp_caller_stat": caller.stat_counts(),
            "unmatched_handset_lines": logs.unmatched_handset_lines,
            "workdir": str(wd),
        }
        o = result["outcomes"]
        self.log(
            f"  -> connected {o['connected']}/{o['attempted']}, failed {o['failed']} "
            f"{o['failure_reasons'] or ''}; "
            f"ring p50/p99 {o['ring_ms']['p50']}/{o['ring_ms']['p99']} ms; "
            f"answer p50/p99 {o['answer_ms']['p50']}/{o['answer_ms']['p99']} ms; "
            f"Asterisk {result['asterisk_cpu_ms_per_call']} ms/call; "
            f"service {result['service_cpu_ms_per_call']} ms/call; "
            f"leftovers {result['leftovers_after']}"
        )
        return result

    # ---- the whole bench ---------------------------------------------------------------

    def plan(self) -> list[tuple[str, float, int]]:
        runs: list[tuple[str, float, int]] = []
        for i, (rate, calls) in enumerate(parse_calls(self.args.calls)):
            order = [p for p in "AB" if p in self.args.paths.upper()]
            if i % 2 == 1:
                order.reverse()
            runs.extend((p, rate, calls) for p in order)
        return runs

    def document(self, runs: list[dict[str, Any]], t_start: float) -> dict[str, Any]:
        s_rate, _, s_secs = self.args.sustain.partition(":")
        return {
            "started_at": self.started_at,
            "elapsed_s": round(time.time() - t_start, 1),
            "command": "python -m bench " + shlex.join(sys.argv[1:]),
            "machine": report.machine(),
            "asterisk": self._asterisk_version(),
            "settings": {
                "calls": self.args.calls,
                "talk_s": self.args.talk_s,
                "handsets": len(self.handsets),
                "handset_processes": len(self.profile.handset_ports),
                "ring_timeout_s": self.profile.ring_timeout_s,
                "retry_s": self.profile.retry_s,
                "service_log_level": self.args.service_log_level,
                "service_event_loop": self.args.service_event_loop,
                "work_dir": str(self.work),
            },
            "runs": runs,
            "targets": report.targets(runs, float(s_rate), float(s_secs)),
            "plot": None,
        }

    def _asterisk_version(self) -> str:
        try:
            return self.ast.cli("core show version").strip().split(" built ")[0]
        except BenchError:
            return "?"

    def write(self, doc: dict[str, Any]) -> None:
        out: Path = self.args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        if report.write_plot(out / "latest.png", doc["runs"]):
            doc["plot"] = str(out / "latest.png")
        report.write_json(out / "latest.json", doc)
        report.write_markdown(out / "latest.md", doc)

    def run(self) -> int:
        t_start = time.time()
        self.work.mkdir(parents=True, exist_ok=True)
        self.log(f"raw logs in {self.work}; starting the bench Asterisk instance")
        runs: list[dict[str, Any]] = []
        doc: dict[str, Any] = {}
        try:
            self.ast.start(self.handsets)
            self.ast.sweep(wait_s=5)
            self.ast.clear_recordings()
            self.db = Database()
            self.db.create()
            Service(
                self.profile,
                self.handsets,
                self.db.dsn,
                self.work / "migrate",
                self.ast.recording_dir,
            ).migrate()
            for idx, (path, rate, calls) in enumerate(self.plan(), start=1):
                runs.append(self.one_run(idx, path, rate, calls))
                doc = self.document(runs, t_start)
                self.write(doc)
                time.sleep(self.args.settle_s)
            if self.args.profile:
                rate_s, _, calls_s = self.args.profile.partition(":")
                prof = self.one_run(99, "B", float(rate_s), int(calls_s), pyspy=True)
                raw = Path(prof["workdir"]) / "pyspy.raw"
                top = pyspy_top(raw)
                (self.args.out_dir / "pyspy-top.txt").write_text(top, encoding="utf-8")
                self.log(f"py-spy profile of the service: {raw}\n{top}")
                doc["profile_run"] = prof
                self.write(doc)
        finally:
            self.cleanup()
        print(report.table(runs))
        print(f"results: {self.args.out_dir}/latest.{{json,md,png}}")
        return 0

    def cleanup(self) -> None:
        for sp in self.sipps:
            sp.stop()
        if self.service is not None:
            self.service.stop()
        if self.db is not None:
            try:
                self.db.drop()
            except Exception as exc:  # noqa: BLE001 - cleanup goes on
                self.log(f"could not drop {self.db.name}: {exc}")
        if self.ast.started_here and not self.args.keep_asterisk:
            self.log("stopping the bench Asterisk instance")
            self.ast.stop()


def _left(left: Leftovers) -> dict[str, float]:
    return {
        "channels": left.channels,
        "bridges": left.bridges,
        "remaining": left.remaining,
        "waited_s": round(left.waited_s, 2),
    }


def _event_of(line: str) -> str:
    import json  # noqa: PLC0415

    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return line[:60]
    return str(rec.get("event", "?")) if isinstance(rec, dict) else "?"


# Leaf frames of a thread that is waiting, not running: the event loop's selector and the
# default executor's idle workers (blocked in queue.get).
_IDLE_LEAVES = ("(selectors.py", "(concurrent/futures/thread.py:81)", "(threading.py:")


def pyspy_top(raw: Path, n: int = 25) -> str:
    """A ``py-spy top``-like table from ``py-spy record --idle --format raw``: the share of
    samples the main thread sat idle in the event loop's selector, then own and total CPU
    samples per function (total: the function is anywhere on the stack)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = idle = 0
    if not raw.exists():
        return f"(no py-spy output at {raw})\n"
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        if any(mark in frames[-1] for mark in _IDLE_LEAVES):
            idle += count
            continue
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    busy = max(1, samples - idle)
    lines = [
        f"py-spy: {samples} samples (all threads); {100 * idle / max(1, samples):.1f}% idle (event "
        f"loop selector, idle executor workers); percentages below are of the {busy} busy ones",
        "",
        "  %own  %total  function (file:line)",
    ]
    for f, c in own.most_common(n):
        lines.append(f"{100 * c / busy:6.1f} {100 * total[f] / busy:7.1f}  {f}")
    lines += ["", "  by %total:"]
    for f, c in total.most_common(n):
        lines.append(f"{100 * own[f] / busy:6.1f} {100 * c / busy:7.1f}  {f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return Bench(args).run()
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
