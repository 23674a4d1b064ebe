"""Benchmark `stepstream serve --durable postgresql://...` replicas on one Postgres.

    python benchmarks/scale.py            # 1, 2 and 3 replicas, latency, failover (~5 min)
    python benchmarks/scale.py --quick    # smoke mode: tiny sizes

Every replica is a real `stepstream serve` process on 127.0.0.1 with its own
``--instance-id``, serving benchmarks/server_app.py durably on one Postgres 15 cluster
(Debian's, started in a temporary directory by tests/_postgres.py and stopped at the end;
a fresh database per measurement). Measured:

- runs per second through ``/run`` with 1, 2 and 3 replicas, 16 requests in flight in all
  (split evenly, one load generator per replica), each run durable (journaled);
- p50/p99 latency from ``write_event_to_stream`` on replica A to the event's arrival at an
  SSE subscriber of replica B (the run started through A, its go signal sent through B),
  at ~1,000 events/s, and the same with the subscriber on A;
- failover time: K runs whose one step sleeps S seconds are started through replica A,
  A is killed with SIGKILL half a second later, and replica B (``--failover-after F``)
  takes them over: the time from the kill to the last run's end, less S (the step in
  flight runs again).

This machine has 2 cores shared by Postgres, the replicas and the load generators: more
replicas cannot add CPU here, so runs per second do not grow with them (see the README's
"Scale out" section for what does and does not scale).

Results: benchmarks/results/scale.json and scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(HERE))

from server import LOAD, Server, _free_port, _pythonpath  # noqa: E402

from _postgres import PostgresServer  # noqa: E402

REPLICAS = (1, 2, 3)
RUNS = (3000, 60)  # /run calls per measurement: (full, quick)
LATENCY = ({"n": 3000, "rate": 1000}, {"n": 200, "rate": 1000})
FAILOVER = ({"runs": 40, "seconds": 2.0, "after": 5.0}, {"runs": 4, "seconds": 1.0, "after": 3.0})


class Cluster:
    """Replicas of `stepstream serve --durable` on one fresh Postgres database."""

    def __init__(self, pg: PostgresServer, tmp: Path, tag: str, failover_after: float) -> None:
        self.url = pg.new_database_url()
        self.tmp = tmp
        self.tag = tag
        self.failover_after = failover_after
        self.replicas: list[Server] = []

    def add(self, n: int) -> None:
        """Start ``n`` more replicas (one at a time: each creates its tables first)."""
        for _ in range(n):
            i = len(self.replicas)
            cmd = [
                sys.executable, "-m", "stepstream", "serve", f"--durable={self.url}",
                "server_app.py:WORKFLOWS", "--port", str(_free_port()),
                "--instance-id", f"{self.tag}-r{i}",
                "--failover-after", str(self.failover_after),
                "--telemetry-dir", str(self.tmp / f"{self.tag}-tel-r{i}"),
            ]  # fmt: skip
            env = {**os.environ, "PYTHONPATH": _pythonpath()}
            log = self.tmp / f"{self.tag}-r{i}.log"
            self.replicas.append(Server(f"{self.tag}-r{i}", cmd, env, log))

    def stop(self) -> None:
        """Stop every replica still running."""
        for replica in self.replicas:
            replica.stop()


def _runs(pg: PostgresServer, tmp: Path, replicas: int, n: int) -> dict[str, Any]:
    """Runs per second through /run, 16 in flight split over ``replicas`` replicas."""
    cluster = Cluster(pg, tmp, f"runs{replicas}", failover_after=15.0)
    try:
        cluster.add(replicas)
        per = max(1, 16 // replicas)
        loads = []
        for replica in cluster.replicas:
            cmd = [
                sys.executable, str(LOAD), "--base", replica.base, "runs",
                "--n", str(n // replicas), "--concurrency", str(per), "--warmup", str(4 * per),
            ]  # fmt: skip
            loads.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        cpu = [r.cpu() for r in cluster.replicas]
        results = []
        for load in loads:
            out, _ = load.communicate(timeout=900)
            if load.returncode != 0:
                msg = f"load generator failed ({load.returncode})"
                raise RuntimeError(msg)
            results.append(json.loads(out.strip().splitlines()[-1]))
        cpu = [r.cpu() - c for r, c in zip(cluster.replicas, cpu, strict=True)]
    finally:
        cluster.stop()
    runs = sum(r["runs"] for r in results)
    seconds = max(r["seconds"] for r in results)
    return {
        "replicas": replicas,
        "runs": runs,
        "seconds": seconds,
        "runs_per_s": runs / seconds,
        "errors": sum(r["errors"] for r in results),
        "replica_cpu_ms_per_run": sum(cpu) * 1000 / (runs + sum(r["warmup"] for r in results)),
    }


def _latency(pg: PostgresServer, tmp: Path, size: dict[str, Any]) -> dict[str, Any]:
    """Write-to-arrival latency, subscriber on another replica and on the same one."""
    cluster = Cluster(pg, tmp, "latency", failover_after=15.0)
    try:
        cluster.add(2)
        a, b = cluster.replicas
        out: dict[str, Any] = {}
        for key, sub in (("cross", b), ("same", a)):
            cmd = [sys.executable, str(LOAD), "--base", a.base, "latency",
                   "--n", str(size["n"]), "--rate", str(size["rate"]), "--sub-base", sub.base]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                msg = f"latency load failed:\n{done.stderr[-2000:]}"
                raise RuntimeError(msg)
            out[key] = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        cluster.stop()
    return out


def _post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def _status(base: str, handler_id: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{base}/handlers/{handler_id}", timeout=5) as response:  # noqa: S310
            answer: dict[str, Any] = json.loads(response.read())
    except OSError:
        return None
    status: str | None = answer.get("status")
    return status


def _failover(pg: PostgresServer, tmp: Path, size: dict[str, Any]) -> dict[str, Any]:
    """Kill replica A mid-step; time until B has finished every one of A's runs."""
    cluster = Cluster(pg, tmp, "failover", failover_after=size["after"])
    try:
        cluster.add(2)
        a, b = cluster.replicas
        start = {"start_event": {"seconds": size["seconds"]}}
        ids = [
            _post(f"{a.base}/workflows/nap/run-nowait", start)["handler_id"]
            for _ in range(size["runs"])
        ]
        time.sleep(0.5)
        a.proc.kill()  # SIGKILL: no lease given back, no step finished
        killed = time.monotonic()
        a.proc.wait(timeout=10)
        pending = set(ids)
        finished: dict[str, float] = {}
        deadline = killed + 180
        while pending and time.monotonic() < deadline:
            for handler_id in list(pending):
                status = _status(b.base, handler_id)
                if status in {"completed", "failed", "cancelled"}:
                    finished[handler_id] = time.monotonic() - killed
                    pending.discard(handler_id)
                    if status != "completed":
                        msg = f"run {handler_id} ended {status} after the failover"
                        raise RuntimeError(msg)
            time.sleep(0.1)
    finally:
        cluster.stop()
    if pending:
        msg = f"{len(pending)} of {size['runs']} runs did not finish within 180 s of the kill"
        raise RuntimeError(msg)
    last = max(finished.values())
    return {
        "runs": size["runs"],
        "step_seconds": size["seconds"],
        "failover_after": size["after"],
        "kill_to_last_end_s": last,
        "kill_to_first_end_s": min(finished.values()),
        "failover_s": last - size["seconds"],
    }


def _render(results: dict[str, Any]) -> str:
    lines = [
        (
            f"Machine: {results['machine']}; {results['date']}; load average at the end "
            f"{results['load']}. One Postgres 15 cluster on 127.0.0.1, a fresh database per "
            "measurement; every replica a `stepstream serve --durable=postgresql://...` "
            "process with its own --instance-id and default telemetry (the embedded store)."
        ),
        "",
        "| measure | value |",
        "|---|---|",
    ]
    lines.extend(
        f"| durable short runs per second through /run, {r['replicas']} replica(s), 16 in "
        f"flight | {r['runs_per_s']:,.0f}/s ({r['replica_cpu_ms_per_run']:.2f} ms of replica "
        f"CPU per run, {r['errors']} errors) |"
        for r in results["runs"]
    )
    lat = results["latency"]
    for key, label in (("cross", "on replica B"), ("same", "on replica A")):
        x = lat[key]
        lines.append(
            f"| write_event_to_stream on replica A to an SSE subscriber {label}, ~{x['rate']:,.0f} "
            f"events/s: p50 / p99 / max | {x['p50_ms']:.2f} / {x['p99_ms']:.2f} / "
            f"{x['max_ms']:.1f} ms |"
        )
    f = results["failover"]
    lines.append(
        f"| failover: {f['runs']} runs in a {f['step_seconds']:g} s step on replica A, A killed "
        f"(SIGKILL), --failover-after {f['failover_after']:g}: kill to the last run's end on "
        f"replica B, less the step | {f['failover_s']:.1f} s (first run ended "
        f"{f['kill_to_first_end_s']:.1f} s, last {f['kill_to_last_end_s']:.1f} s after the "
        "kill) |"
    )
    lines += [
        "",
        (
            "How each figure is taken (benchmarks/scale.py): runs per second = all replicas' "
            "/run calls / the slowest load generator's seconds, 16 connections in all split evenly "
            "over the replicas; replica CPU from /proc; latency = the Tick's monotonic clock "
            "(read before write_event_to_stream on the replica executing the run) to its arrival "
            "at the subscriber's socket (one machine, one clock); failover = SIGKILL of replica "
            "A, then GET /handlers/{id} on replica B every 0.1 s until each run completed."
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the measurements; write results/scale.json and scale.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    q = 1 if args.quick else 0
    pg = PostgresServer()
    pg.start()
    try:
        with tempfile.TemporaryDirectory(prefix="stepstream-scale-bench-") as folder:
            tmp = Path(folder)
            runs = []
            for n in REPLICAS:
                runs.append(_runs(pg, tmp, n, RUNS[q]))
                print("runs", json.dumps(runs[-1]), flush=True)
            latency = _latency(pg, tmp, LATENCY[q])
            print("latency", json.dumps(latency), flush=True)
            failover = _failover(pg, tmp, FAILOVER[q])
            print("failover", json.dumps(failover), flush=True)
    finally:
        pg.remove()
    results = {
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "quick": args.quick,
        "runs": runs,
        "latency": latency,
        "failover": failover,
        "runs_per_s_by_replicas": {r["replicas"]: r["runs_per_s"] for r in runs},
        "median_runs_per_s": statistics.median(r["runs_per_s"] for r in runs),
    }
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "scale.md").write_text(_render(results))
    print(_render(results))


if __name__ == "__main__":
    main()
