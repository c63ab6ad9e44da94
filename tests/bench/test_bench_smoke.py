"""A 10-second smoke run of the real benchmark (``python -m bench``) on both paths.

It asserts outcomes only (every call connected on both paths, the outputs written), never
timings: CI machines are too noisy for latency thresholds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_bench_smoke_connects_every_call_on_both_paths(tmp_path: Path) -> None:
    """At 2 calls/s for 10 s both Queue() and siaga_pbx connect every call; results are written."""
    out = tmp_path / "results"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--calls",
            "2:20",
            "--out-dir",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--settle-s",
            "0.5",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    doc = json.loads((out / "latest.json").read_text(encoding="utf-8"))
    runs = {r["path"]: r for r in doc["runs"]}
    assert set(runs) == {"A", "B"}, doc["runs"]
    for path, run in runs.items():
        outcomes = run["outcomes"]
        assert outcomes["attempted"] == 20, (path, outcomes)
        assert outcomes["connected"] == 20, (path, outcomes, run["workdir"])
        assert outcomes["failed"] == 0, (path, outcomes)
        assert run["leftovers_after"]["channels"] == 0, (path, run["leftovers_after"])
    assert runs["B"]["service_peak_rss_mib"] is not None
    table = (out / "latest.md").read_text(encoding="utf-8")
    assert "| Queue() (app_queue) |" in table
    assert "| siaga_pbx (ARI) |" in table
    assert (out / "latest.png").stat().st_size > 0
