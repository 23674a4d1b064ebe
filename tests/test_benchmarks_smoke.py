"""The benchmark harness keeps working: its quick smoke mode runs every workload once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs_every_workload_in_both_modes(tmp_path: Path) -> None:
    """`benchmarks/run.py --quick` measures all six workloads with telemetry off and on."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    seen = {(row["mode"], row["workload"]) for row in results["rows"]}
    workloads = {"W1", "W2", "W3", "W4", "W5park", "W5leak"}
    assert seen == {(mode, w) for mode in ("off", "on") for w in workloads}
    for row in results["rows"]:
        assert row["stepstream_wall_s"] > 0
    parked = [r for r in results["rows"] if r["workload"] == "W5park"]
    assert all(r["stepstream_rss_per_run_bytes"] > 0 for r in parked)
    table = (tmp_path / "results.md").read_text()
    assert "| off | W1 stream |" in table
    assert "| on | W5 leak |" in table
