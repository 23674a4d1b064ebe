"""The benchmark harness keeps working: its quick smoke mode runs every workload once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _harness(option: str, out: Path) -> None:
    """Run `benchmarks/run.py OPTION --out OUT` and fail with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), option, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_quick_benchmark_runs_every_workload_in_both_modes(tmp_path: Path) -> None:
    """`benchmarks/run.py --quick` measures all six workloads with telemetry off and on."""
    _harness("--quick", tmp_path)
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


def _row(mode: str, workload: str, n: int, wall: float, **extra: float) -> dict[str, object]:
    return {
        "mode": mode,
        "label": f"{workload} n={n}",
        "workload": workload,
        "n": n,
        "stepstream_wall_s": wall,
        "stepstream_cpu_s": wall,
        **extra,
    }


def test_render_checks_every_target_of_the_issue(tmp_path: Path) -> None:
    """`--render` marks each row met or MISSED against the issue's targets."""
    rows = [
        _row("off", "W1", 100_000, 0.30, reference_wall_s=2.9, ratio=2.9 / 0.30),  # 9.7x
        _row("off", "W3", 1_000, 0.010),
        _row("off", "W3", 2_000, 0.020, reference_wall_s=15.0, ratio=750.0),
        _row("off", "W3", 10_000, 0.130),  # 13 x T(1,000)
        _row("off", "W5park", 10_000, 1.0, stepstream_rss_per_run_bytes=8_000.0),
        _row("on", "W3", 2_000, 0.33, reference_wall_s=16.5, ratio=50.0),
        _row(
            "on",
            "W5leak",
            10_000,
            7.0,
            stepstream_rss_growth=0.12,
        ),
        _row("on", "W1-all", 100_000, 1.7, stepstream_cpu_us_per_event=17.0),
    ]
    results = {
        "machine": {"python": "3.11", "platform": "test", "cpus": 2, "processor": "x"},
        "date": "2026-11-25",
        "repetitions": 5,
        "quick": False,
        "rows": rows,
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    _harness("--render", tmp_path)
    verdicts = {
        (r["mode"], r["workload"], r["n"]): r.get("met")
        for r in json.loads((tmp_path / "results.json").read_text())["rows"]
    }
    assert verdicts == {
        ("off", "W1", 100_000): False,  # 9.7x < 10x
        ("off", "W3", 1_000): None,  # no target of its own
        ("off", "W3", 2_000): True,
        ("off", "W3", 10_000): False,  # grew faster than linearly
        ("off", "W5park", 10_000): True,
        ("on", "W3", 2_000): True,  # exactly 50x
        ("on", "W5leak", 10_000): False,  # +12%
        ("on", "W1-all", 100_000): True,
    }
    table = (tmp_path / "results.md").read_text()
    assert "| off | W1 n=100000 | 300 ms | 2,900 ms | 9.7x | >= 10x: **MISSED** |" in table
    assert "| on | W3 n=2000 | 330 ms | 16,500 ms | 50.0x | >= 50x: met |" in table


def test_quick_server_benchmark_measures_every_phase(tmp_path: Path) -> None:
    """`benchmarks/server.py --quick` serves with `stepstream serve` and fills every row."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "server.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "server.json").read_text())
    summary = results["summary"]["stepstream"]
    for key in ("runs_per_s", "events_per_s_1", "events_per_s_100", "latency_p99_ms"):
        assert summary[key] > 0, key
    assert all(s["complete"] for s in results["samples"]["stepstream"]["stream1"])
    assert results["memory"]["stepstream"]["streams"] > 0
    assert results["otlp_burst"]["runs"] > 0
    table = (tmp_path / "server.md").read_text()
    assert "| short runs per second through /run, 16 in flight |" in table
    assert "OTLP export (logs too)" in table
