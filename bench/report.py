"""The bench's outputs: latest.json, latest.md (a markdown table) and latest.png (a plot)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

PATH_LABEL = {"A": "Queue() (app_queue)", "B": "siaga_pbx (ARI)"}


def machine() -> dict[str, Any]:
    """nproc, CPU model, RAM and the software versions of this host."""
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    sipp = subprocess.run(
        ["sipp", "-v"],  # noqa: S607 - the Debian sip-tester binary on PATH
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sipp": next((ln.strip() for ln in sipp.splitlines() if "SIPp" in ln), "?"),
    }


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _lat(d: dict[str, float | None]) -> str:
    return " / ".join(
        _fmt(d.get(k), 0 if (d.get(k) or 0) >= 10 else 1) for k in ("p50", "p90", "p99")
    )


def table(runs: list[dict[str, Any]]) -> str:
    """One row per path and rate, Queue() first."""
    head = (
        "| path | rate (calls/s) | attempted | connected | failed "
        "| answer: INVITE→200 OK p50 / p90 / p99 (ms) "
        "| ring: INVITE→handset INVITE p50 / p90 / p99 (ms) "
        "| Asterisk CPU (ms/call) | service CPU (ms/call) | service peak RSS (MiB) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = []
    for r in sorted(runs, key=lambda r: (r["rate_cps"], r["calls"], r["path"])):
        o = r["outcomes"]
        svc_cpu = r.get("service_cpu_ms_per_call")
        rss = r.get("service_peak_rss_mib")
        rows.append(
            f"| {PATH_LABEL[r['path']]} | {r['rate_cps']:g} ({r['calls']} calls) "
            f"| {o['attempted']} | {o['connected']} | {o['failed']} "
            f"| {_lat(o['answer_ms'])} | {_lat(o['ring_ms'])} "
            f"| {_fmt(r['asterisk_cpu_ms_per_call'], 2)} "
            f"| {_fmt(svc_cpu, 2) if svc_cpu is not None else 'n/a'} "
            f"| {_fmt(rss, 1) if rss is not None else 'n/a'} |"
        )
    return head + "\n".join(rows) + "\n"


def targets(runs: list[dict[str, Any]], sustain_rate: float, sustain_s: float) -> dict[str, Any]:
    """The issue's targets, each with the evidence it was judged on."""
    by_key: dict[tuple[float, int], dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_key.setdefault((r["rate_cps"], r["calls"]), {})[r["path"]] = r
    pairs = [(k, v) for k, v in sorted(by_key.items()) if "A" in v and "B" in v]
    t1: list[dict[str, Any]] = []
    t2: list[dict[str, Any]] = []
    for (rate, calls), pr in pairs:
        a, b = pr["A"]["outcomes"], pr["B"]["outcomes"]
        if a["failed"] == 0:
            t1.append(
                {
                    "rate_cps": rate,
                    "calls": calls,
                    "ok": b["failed"] == 0,
                    "queue_failed": a["failed"],
                    "siaga_failed": b["failed"],
                }
            )
        for measure in ("ring_ms", "answer_ms"):
            ap50, ap99 = a[measure]["p50"], a[measure]["p99"]
            bp50, bp99 = b[measure]["p50"], b[measure]["p99"]
            if None in (ap50, ap99, bp50, bp99):
                continue
            t2.append(
                {
                    "rate_cps": rate,
                    "calls": calls,
                    "measure": measure,
                    "p50_ratio": round(bp50 / max(ap50, 0.1), 2),
                    "p99_ratio": round(bp99 / max(ap99, 0.1), 2),
                    "ok": bp50 <= 1.2 * ap50 and bp99 <= 1.5 * ap99,
                }
            )
    sustained = [
        r
        for r in runs
        if r["path"] == "B"
        and r["rate_cps"] >= sustain_rate
        and r["calls"] >= sustain_rate * sustain_s
    ]
    return {
        "all_connected_where_queue_does": {
            "ok": bool(t1) and all(x["ok"] for x in t1),
            "detail": t1,
        },
        "latency_p50_1.2x_p99_1.5x": {
            "ok_ring": bool(t2) and all(x["ok"] for x in t2 if x["measure"] == "ring_ms"),
            "ok_answer": bool(t2) and all(x["ok"] for x in t2 if x["measure"] == "answer_ms"),
            "detail": t2,
        },
        "sustained_50cps_60s_zero_failures": {
            "ok": bool(sustained) and all(r["outcomes"]["failed"] == 0 for r in sustained),
            "runs": [
                {"rate_cps": r["rate_cps"], "calls": r["calls"], "failed": r["outcomes"]["failed"]}
                for r in sustained
            ],
        },
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def write_markdown(path: Path, doc: dict[str, Any]) -> None:
    m = doc["machine"]
    t = doc["targets"]
    lat = t["latency_p50_1.2x_p99_1.5x"]
    lines = [
        "# Siaga 112 bench: Queue() vs siaga_pbx (latest run)",
        "",
        f"Run {doc['started_at']} ({doc['elapsed_s']:.0f} s), command `{doc['command']}`.",
        f"Machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['ram_gib']} GiB RAM, "
        f"kernel {m['kernel']}, Python {m['python']}, {m['sipp']}, {doc.get('asterisk', '?')}.",
        f"Handsets: {doc['settings']['handsets']}, talk time {doc['settings']['talk_s']} s, "
        f"ring timeout {doc['settings']['ring_timeout_s']} s, strategy leastrecent.",
        "",
        table(doc["runs"]),
        "Targets:",
        "",
        f"- every call connected by siaga_pbx wherever Queue() connected all: "
        f"**{'met' if t['all_connected_where_queue_does']['ok'] else 'NOT met'}**",
        f"- ring latency p50 <= 1.2x and p99 <= 1.5x Queue(): "
        f"**{'met' if lat['ok_ring'] else 'NOT met'}**; "
        f"answer latency: **{'met' if lat['ok_answer'] else 'NOT met'}**",
        f"- 50 calls/s for 60 s with zero failures (siaga_pbx): "
        f"**{'met' if t['sustained_50cps_60s_zero_failures']['ok'] else 'NOT met'}**",
        "",
    ]
    for r in doc["runs"]:
        reasons = r["outcomes"]["failure_reasons"]
        if reasons:
            lines.append(
                f"- failures, {PATH_LABEL[r['path']]} at {r['rate_cps']:g}/s: "
                + ", ".join(f"{k}: {v}" for k, v in reasons.items())
            )
    if doc.get("plot"):
        lines += ["", f"![latency vs rate]({Path(doc['plot']).name})", ""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plot(path: Path, runs: list[dict[str, Any]]) -> bool:
    """Latency vs rate for both paths (needs matplotlib: the ``bench`` extra)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional dependency

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    measures = (
        ("ring_ms", "caller INVITE → handset INVITE"),
        ("answer_ms", "caller INVITE → 200 OK"),
    )
    styles = {"A": ("tab:blue", "o"), "B": ("tab:red", "s")}
    for ax, (measure, title) in zip(axes, measures, strict=True):
        for p in ("A", "B"):
            pts = sorted(
                ((r["rate_cps"], r["outcomes"][measure]) for r in runs if r["path"] == p),
                key=lambda x: x[0],
            )
            rates = [x[0] for x in pts]
            color, marker = styles[p]
            for q, ls in (("p50", "-"), ("p99", "--")):
                vals = [x[1][q] if x[1][q] is not None else float("nan") for x in pts]
                ax.plot(rates, vals, ls, color=color, marker=marker, label=f"{PATH_LABEL[p]} {q}")
        ax.set_title(title)
        ax.set_xlabel("offered load (calls/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
