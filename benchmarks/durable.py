"""Benchmark durable runs (issue 16): stepstream.durable against llama-agents-dbos, side by side.

    python benchmarks/durable.py               # the full comparison
    python benchmarks/durable.py --quick       # small sizes, one repetition
    python benchmarks/durable.py --render      # redo durable.md from durable.json
    python benchmarks/durable.py --only recovery --dbs sqlite --sides peer

Each side runs in subprocesses of its own (benchmarks/_durable/peer.py in the peer's
virtualenv .cache/bench-durable-peer, made by this script: llama-agents-dbos 0.7.0 on
dbos 2.31.1 with llama-index-workflows 2.26.1; benchmarks/_durable/ours.py with this
interpreter and stepstream from --stepstream-src, default src/). Both run the same
workflows (benchmarks/_durable/flows.py). The sides alternate within each repetition; each
figure is the median over repetitions. Every driver gets a fresh database: a SQLite file
in a temporary folder, or a fresh database in a throwaway Postgres cluster on 127.0.0.1
(tests/_postgres.py, the tests' own), stopped at the end.

- bench: a run of N sequential steps in memory and durable (per step: the time between
  consecutive step starts; the checkpoint cost is durable minus in-memory), Postgres's
  CPU per step (all its processes, from /proc), sequential 3-step runs (wall time of
  ``await wf.run()``), and the live stream's latency (write_event_to_stream in a step to
  the reader of handler.stream_events()).
- recovery: R runs of three steps, all parked in the second step, ``kill -9``, restart;
  the time from the restart to the last run's last step, and which steps ran again
  (every step appends to a counter file outside the process).
- park: resident memory of 10,000 runs parked on a human's answer, after idle release
  (on Postgres by default: the peer's connection pool runs out on SQLite at 10,000).

Results: benchmarks/results/durable.json and durable.md. Driver logs: .cache/bench-durable-logs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DRIVERS = HERE / "_durable"
sys.path[:0] = [str(DRIVERS), str(ROOT / "tests")]

from server import peer_python  # noqa: E402

from _postgres import PostgresServer, postgres_bin  # noqa: E402

PEER = ("llama-agents-dbos==0.7.0", "dbos==2.31.1", "llama-index-workflows==2.26.1")
PEER_VENV = ROOT / ".cache" / "bench-durable-peer"
LOGS = ROOT / ".cache" / "bench-durable-logs"
OURS, THEIRS = "stepstream", "peer"

# Sizes: the full run's, then --quick's.
BENCH = ({"n": 300, "k": 10, "stream-n": 50, "gap": 0.02}, {"n": 20, "k": 3, "stream-n": 10})
RECOVERY_RUNS = ({OURS: 1000, THEIRS: 200}, {OURS: 50, THEIRS: 20})
PARK_RUNS = (10_000, 200)
CHECKPOINT_RATIO = 10.0
RECOVERY_TARGET_S = 10.0


@dataclass
class SideSpec:
    """How to start one side's driver, or why it cannot run."""

    name: str
    python: str
    script: Path
    env: dict[str, str]
    missing: str = ""
    config: str = "default"
    extra: dict[str, Any] = field(default_factory=dict)


def _ours(src: Path) -> SideSpec:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(DRIVERS)])}
    probe = subprocess.run(
        [sys.executable, "-c", "from stepstream.durable import DBOSRuntime"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    missing = ""
    if probe.returncode != 0:
        lines = probe.stderr.strip().splitlines()
        missing = lines[-1] if lines else f"exit {probe.returncode}"
    return SideSpec(OURS, sys.executable, DRIVERS / "ours.py", env, missing)


def _peer(config: str) -> SideSpec:
    python = peer_python(PEER_VENV, PEER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return SideSpec(THEIRS, str(python), DRIVERS / "peer.py", env, config=config)


class Driver:
    """One driver process: wait for its ``result``, or ``kill`` it."""

    pg_bin = str(postgres_bin() or "")  # psql, for the drivers' row counts

    live: ClassVar[set[Driver]] = set()

    @classmethod
    def kill_all(cls) -> None:
        """Kill every driver still running (an interrupted harness leaves none behind)."""
        for driver in list(cls.live):
            driver.kill()

    def __init__(self, side: SideSpec, op: str, args: list[str], env: dict[str, str]) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log = LOGS / f"{side.name}-{op}.log"
        self.cmd = [side.python, str(side.script), op, "--config", side.config, *args]
        self._err = self.log.open("ab")
        self._err.write(f"\n### {' '.join(self.cmd)}\n".encode())
        self._err.flush()
        self.proc = subprocess.Popen(
            self.cmd, env={**side.env, "BENCH_PG_BIN": self.pg_bin, **env},
            stdout=subprocess.PIPE, stderr=self._err,
            cwd=DRIVERS, start_new_session=True, text=True,
        )  # fmt: skip
        Driver.live.add(self)

    def readline(self, timeout: float) -> str:
        """The next stdout line (the driver flushes each), or raise after ``timeout``."""
        assert self.proc.stdout is not None  # noqa: S101 - PIPE
        os.set_blocking(self.proc.stdout.fileno(), False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line:
                return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        msg = f"no output from {' '.join(self.cmd)} in {timeout:.0f} s; see {self.log}"
        raise TimeoutError(msg)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the driver to exit; its last JSON line (``{"error"}`` on failure)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"error": f"timed out after {timeout:.0f} s; see {self.log}"}
        finally:
            self._err.close()
            Driver.live.discard(self)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            return {"error": f"exit {self.proc.returncode}, no result; see {self.log}"}
        result: dict[str, Any] = json.loads(lines[-1])
        if "error" in result:
            result = {"error": f"{result['error']}; see {self.log}"}
        return result

    def kill(self) -> None:
        """SIGKILL this driver (by its pid) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        Driver.live.discard(self)
        if not self._err.closed:
            self._err.close()


class Databases:
    """A fresh database per driver: SQLite files in a folder, or a Postgres cluster's."""

    def __init__(self, tmp: Path, kinds: list[str]) -> None:
        self.tmp = tmp
        self.count = 0
        self.pg: PostgresServer | None = None
        if "postgres" in kinds:
            self.pg = PostgresServer()
            try:
                self.pg.start()
            except BaseException:
                self.pg.remove()
                raise

    def url(self, kind: str, tag: str) -> tuple[str, list[str]]:
        """A new database's URL and the driver arguments that go with it."""
        self.count += 1
        name = f"{tag}_{self.count}"
        if kind == "sqlite":
            return f"sqlite:///{self.tmp / name}.sqlite", []
        assert self.pg is not None  # noqa: S101 - made when postgres is asked for
        subprocess.run(
            [str(self.pg.bindir / "psql"), "-d", self.pg.url, "-c", f'CREATE DATABASE "{name}"'],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return self.pg.url.rsplit("/", 1)[0] + f"/{name}", ["--pg-pid", str(self.pg.pid)]

    def stop(self) -> None:
        """Stop the Postgres cluster, if one was started."""
        if self.pg is not None:
            self.pg.remove()


def _bench(side: SideSpec, dbs: Databases, kind: str, quick: bool) -> dict[str, Any]:
    url, extra = dbs.url(kind, f"{side.name}_bench")
    sizes = BENCH[1 if quick else 0]
    args = ["--db", url, *extra]
    for key, value in sizes.items():
        args += [f"--{key}", str(value)]
    return Driver(side, "bench", args, {}).result(timeout=900)


def _counter_report(path: Path, split: int, runs: int) -> dict[str, Any]:
    """Which steps ran again after the kill (the counter file's lines, split at the kill)."""
    data = path.read_bytes()
    before = data[:split].decode().splitlines()
    after = data[split:].decode().splitlines()
    done_before = {tuple(line.split()[:2]) for line in before if line.endswith(" done")}
    entered_before = {tuple(line.split()[:2]) for line in before if line.endswith(" enter")}
    entered_after = Counter(tuple(line.split()[:2]) for line in after if line.endswith(" enter"))
    finished = {line.split()[0] for line in after + before if line.endswith(" s3 done")}
    rerun_done = sorted(k for k in entered_after if k in done_before)
    rerun_inflight = [k for k in entered_after if k in entered_before and k not in done_before]
    return {
        "runs": runs,
        "parked_at_kill": sum(1 for k in entered_before if k[1] == "s2" and k not in done_before),
        "steps_done_before_kill": len(done_before),
        "completed_steps_rerun": len(rerun_done),
        "completed_steps_rerun_examples": [" ".join(k) for k in rerun_done[:5]],
        "inflight_steps_rerun": len(rerun_inflight),
        "runs_finished": len(finished),
    }


def _recovery(
    side: SideSpec, dbs: Databases, kind: str, runs: int, settle: float
) -> dict[str, Any]:
    url, _ = dbs.url(kind, f"{side.name}_rec")
    counter = dbs.tmp / f"counter-{dbs.count}.txt"
    counter.write_text("")
    env = {"BENCH_DURABLE_COUNTER": str(counter)}
    args = ["--db", url, "--runs", str(runs), "--time-limit", "600"]
    first = Driver(side, "recover-start", args, {**env, "BENCH_DURABLE_PARK": "1"})
    try:
        t0 = time.monotonic()
        started = json.loads(first.readline(timeout=600))
        if "error" in started:
            return {"error": f"{started['error']}; see {first.log}"}
        parked = 0
        while time.monotonic() - t0 < 600:
            parked = sum(
                1 for line in counter.read_text().splitlines() if line.endswith("s2 enter")
            )
            if parked >= runs or first.proc.poll() is not None:
                break
            time.sleep(0.05)
        park_s = time.monotonic() - t0
        time.sleep(settle)  # checkpoints still being written land (all runs stay parked)
    finally:
        first.kill()  # kill -9 while every run is parked in s2
    split = counter.stat().st_size
    if parked < runs:
        return {"error": f"only {parked} of {runs} runs parked within 600 s; see {first.log}"}
    t_restart = time.time()
    second = Driver(side, "recover-finish", args, env)
    result = second.result(timeout=900)
    if "error" in result:
        return result
    report = _counter_report(counter, split, runs)
    report.update(
        settle_s=settle,
        start_and_park_s=park_s,
        recovered_s=result["t_done"] - t_restart,
        from_launch_s=result["t_done"] - result["t_start"],
        finished_by_driver=result["finished"],
        dbos_statuses=result.get("dbos_statuses"),
    )
    if report["runs_finished"] < runs:
        report["error"] = f"{report['runs_finished']} of {runs} runs finished after the restart"
    return report


def _park(side: SideSpec, dbs: Databases, kind: str, n: int) -> dict[str, Any]:
    url, _ = dbs.url(kind, f"{side.name}_park")
    args = ["--db", url, "--runs", str(n), "--idle-timeout", "2", "--time-limit", "3000"]
    return Driver(side, "park", args, {}).result(timeout=3600)


def _sides(args: argparse.Namespace) -> tuple[list[SideSpec], dict[str, str]]:
    """The sides asked for that can run, and why the others cannot."""
    sides: list[SideSpec] = []
    unavailable: dict[str, str] = {}
    for name in args.sides:
        if name == OURS:
            side = _ours(args.stepstream_src)
        else:
            side = _peer("tuned" if name == "peer-tuned" else "default")
        side.name = name
        if side.missing:
            print(f"{name} side: not available ({side.missing})", flush=True)
            unavailable[name] = side.missing
        else:
            sides.append(side)
    return sides, unavailable


def _measure(args: argparse.Namespace, sides: list[SideSpec], dbs: Databases) -> dict[str, Any]:
    """Every measurement asked for, the sides alternating from one repetition to the next."""
    q = 1 if args.quick else 0
    samples: dict[str, dict[str, Any]] = {
        s.name: {"bench": {}, "recovery": {}, "park": []} for s in sides
    }

    def note(side: SideSpec, what: str, kind: str, result: dict[str, Any]) -> None:
        section = samples[side.name][what]
        (section.setdefault(kind, []) if kind else section).append(result)
        print(side.name, what, kind, json.dumps(result), flush=True)

    def alternating(reps: int, kinds: list[str]) -> list[tuple[str, SideSpec]]:
        return [
            (kind, side)
            for rep in range(reps)
            for kind in kinds
            for side in sides[:: 1 if rep % 2 == 0 else -1]
        ]

    for kind, side in alternating(args.reps, args.dbs) if "bench" in args.only else ():
        note(side, "bench", kind, _bench(side, dbs, kind, args.quick))
    for kind, side in alternating(args.reps, args.dbs) if "recovery" in args.only else ():
        runs = RECOVERY_RUNS[q][OURS if side.name == OURS else THEIRS]
        note(side, "recovery", kind, _recovery(side, dbs, kind, runs, args.settle))
    for _, side in alternating(args.park_reps, [""]) if "park" in args.only else ():
        if side.name != "peer-tuned":  # polling does not change what a parked run holds
            runs = args.park_runs or PARK_RUNS[q]
            note(side, "park", "", _park(side, dbs, args.park_db, runs))
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure what ``args`` asks for; write durable.json and durable.md."""
    sides, unavailable = _sides(args)
    with tempfile.TemporaryDirectory(prefix="durable-bench-") as folder:
        kinds = args.dbs if {"bench", "recovery"} & set(args.only) else []
        dbs = Databases(Path(folder), [*kinds, args.park_db] if "park" in args.only else kinds)
        try:
            samples = _measure(args, sides, dbs)
        finally:
            Driver.kill_all()
            dbs.stop()
    notes = list(args.note)
    if args.merge and (args.out / "durable.json").exists():
        old = json.loads((args.out / "durable.json").read_text())
        samples = _merge(old, samples, args.only)
        notes = [*old.get("notes", []), *notes]
    results = {
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
        "repetitions": args.reps,
        "quick": args.quick,
        "peer": " ".join(PEER),
        "unavailable": unavailable,
        "notes": notes,
        "summary": {name: _summary(s) for name, s in samples.items()},
        "samples": samples,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "durable.json").write_text(json.dumps(results, indent=2))
    (args.out / "durable.md").write_text(_markdown(results))
    return results


def _merge(old: dict[str, Any], new: dict[str, Any], only: list[str]) -> dict[str, Any]:
    """``new`` samples, and the old file's for every side and section not measured now."""
    merged = {name: dict(sections) for name, sections in old.get("samples", {}).items()}
    for name, sections in new.items():
        kept = merged.setdefault(name, {"bench": {}, "recovery": {}, "park": []})
        kept.update({section: value for section, value in sections.items() if section in only})
    return merged


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _summary(samples: dict[str, Any]) -> dict[str, Any]:
    """Medians over the repetitions that succeeded (errors are listed, not averaged)."""
    out: dict[str, Any] = {"errors": []}
    for kind, runs in samples["bench"].items():
        ok = [r for r in runs if "error" not in r]
        out["errors"] += [f"bench {kind}: {r['error']}" for r in runs if "error" in r]
        out[f"bench_{kind}"] = {
            "memory_step_ms": _med([r["memory_chain"]["per_step_ms"] for r in ok]),
            "durable_step_ms": _med([r["durable_chain"]["per_step_ms"] for r in ok]),
            "between_starts_ms": _med(
                [r["durable_chain"].get("between_starts_ms", 0.0) for r in ok]
            ),
            "rows_per_step": _med([r["rows_per_step"] for r in ok if "rows_per_step" in r]),
            "commits_per_step": _med(
                [r["commits_per_step"] for r in ok if "commits_per_step" in r]
            ),
            "commit_ms": _med([r["commit_ms"] for r in ok if "commit_ms" in r]),
            "checkpoint_ms": _med(
                [r["durable_chain"]["per_step_ms"] - r["memory_chain"]["per_step_ms"] for r in ok]
            ),
            "pg_cpu_ms_per_step": _med(
                [r["pg_cpu_ms_per_step"] for r in ok if "pg_cpu_ms_per_step" in r]
            ),
            "three_ms": _med([r["three_ms"]["median"] for r in ok]),
            "stream_p50_ms": _med([r["stream"]["p50_ms"] for r in ok]),
            "stream_p99_ms": _med([r["stream"]["p99_ms"] for r in ok]),
            "launch_ms": _med([r["launch_ms"] for r in ok]),
        }
    for kind, runs in samples["recovery"].items():
        measured = [r for r in runs if "recovered_s" in r]  # ran, all runs finished or not
        ok = [r for r in measured if "error" not in r]
        out["errors"] += [f"recovery {kind}: {r['error']}" for r in runs if "error" in r]
        out[f"recovery_{kind}"] = {
            "runs": measured[0]["runs"] if measured else None,
            "recovered_s": _med([r["recovered_s"] for r in ok]),
            "from_launch_s": _med([r["from_launch_s"] for r in ok]),
            "completed_steps_rerun": (
                sum(r["completed_steps_rerun"] for r in measured) if measured else None
            ),
            "finished_min": min((r["runs_finished"] for r in measured), default=None),
            "repetitions": len(ok),
        }
    park = [r for r in samples["park"] if "error" not in r]
    out["errors"] += [f"park: {r['error']}" for r in samples["park"] if "error" in r]
    if park:
        out["park"] = {
            "runs": park[0]["runs"],
            "db": park[0].get("db", "sqlite"),
            "bytes_per_run": _med([r["bytes_per_run"] for r in park]),
            "gc_objects_per_run": _med([r["gc_objects_per_run"] for r in park]),
            "released": all(r.get("released", True) for r in park),
            "release_wait_s": _med([r["release_wait_s"] for r in park]),
        }
    return out


def _fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def _rows(results: dict[str, Any], names: list[str]) -> list[list[str]]:  # noqa: C901, PLR0915
    """Table rows: measure, one cell per side, ratio (peer / stepstream), target verdict."""
    summary = results["summary"]
    rows: list[list[str]] = []

    def get(name: str, section: str, key: str) -> float | None:
        figures = summary.get(name, {}).get(section, {})
        if key == "checkpoint_judged_ms":
            # A checkpoint's cost: what a step costs durable, or one journal commit if that
            # is more (group commit can batch trivial steps' checkpoints into one commit).
            costs = [figures.get(k) for k in ("checkpoint_ms", "commit_ms")]
            return max((c for c in costs if c is not None), default=None)
        value: float | None = figures.get(key)
        return value

    def verdict(ok: bool | None, target: str) -> str:
        if ok is None:
            return f"{target}: -"
        return f"{target}: {'met' if ok else '**MISSED**'}"

    def row(label: str, section: str, key: str, spec: str, unit: str, *, target: str = "measured",
            good: Any = None, ratio: bool = True) -> None:  # fmt: skip
        cells = [_fmt(get(n, section, key), spec, unit) for n in names]
        ours, peer = get(OURS, section, key), get(THEIRS, section, key)
        r = peer / ours if ratio and ours and peer else None
        ok = good(ours, r) if good is not None and ours is not None else None
        rows.append([label, *cells, _fmt(r, ".1f", "x"), verdict(ok, target) if good else target])

    for kind in ("sqlite", "postgres"):
        section = f"bench_{kind}"
        if not any(section in summary.get(n, {}) for n in names):
            continue
        db = "SQLite" if kind == "sqlite" else "Postgres"
        row(f"checkpoint cost, {db} (the larger of the two below)", section,
            "checkpoint_judged_ms", ".2f", " ms", target=f">= {CHECKPOINT_RATIO:g}x",
            good=lambda _o, r: r is not None and r >= CHECKPOINT_RATIO)  # fmt: skip
        row(f"  durable step - in-memory step (wall per step), {db}", section,
            "checkpoint_ms", ".2f", " ms")  # fmt: skip
        row(f"  one journal commit, median, {db}", section, "commit_ms", ".2f", " ms")
        row(f"  time per step, durable, {db}", section, "durable_step_ms", ".2f", " ms")
        row(
            f"  time per step, in memory ({db} run's process)",
            section,
            "memory_step_ms",
            ".3f",
            " ms",
        )
        row(
            f"  time between step starts, durable, {db}", section, "between_starts_ms", ".3f", " ms"
        )
        row(f"  rows left in the database per step, {db}", section, "rows_per_step", ".1f", "")
        row(f"  journal commits per step, {db}", section, "commits_per_step", ".2f", "")
        if kind == "postgres":
            row("  Postgres server CPU per step", section, "pg_cpu_ms_per_step", ".2f", " ms")
        row(f"3-step run, wall time of `await run()`, {db}", section, "three_ms", ".1f", " ms")
        row(f"live stream, write_event_to_stream to reader, p50, {db}", section,
            "stream_p50_ms", ".2f", " ms")  # fmt: skip
        row(f"live stream, write_event_to_stream to reader, p99, {db}", section,
            "stream_p99_ms", ".2f", " ms", target="no polling delay (<= 10 ms)",
            good=lambda o, _r: o <= 10.0)  # fmt: skip
        row(f"launch (DBOS and the runtime), {db}", section, "launch_ms", ".0f", " ms")
    for kind in ("sqlite", "postgres"):
        section = f"recovery_{kind}"
        if not any(section in summary.get(n, {}) for n in names):
            continue
        db = "SQLite" if kind == "sqlite" else "Postgres"
        cells = []
        for n in names:
            rec = summary.get(n, {}).get(section, {})
            cells.append(
                "-" if rec.get("recovered_s") is None
                else f"{rec['recovered_s']:.1f} s ({rec['runs']:,} runs)"
            )  # fmt: skip
        ours = summary.get(OURS, {}).get(section, {})
        ok = None
        if ours.get("recovered_s") is not None:
            ok = ours["recovered_s"] <= RECOVERY_TARGET_S and ours["runs"] >= 1000
        rows.append([f"in-flight runs recovered after `kill -9`: restart to last step, {db}",
                     *cells, "-", verdict(ok, "1,000 runs <= 10 s")])  # fmt: skip
        cells = [_fmt(summary.get(n, {}).get(section, {}).get("completed_steps_rerun"), "d")
                 for n in names]  # fmt: skip
        rerun = ours.get("completed_steps_rerun")
        rows.append([f"completed steps run again after the restart (all repetitions), {db}",
                     *cells, "-", verdict(None if rerun is None else rerun == 0, "0")])  # fmt: skip
        lost = [summary.get(n, {}).get(section, {}) for n in names]
        cells = ["-" if not r.get("runs") else f"{r['runs'] - r['finished_min']:,}" for r in lost]
        unfinished = ours["runs"] - ours["finished_min"] if ours.get("runs") else None
        rows.append([f"runs that never finished after the restart (worst repetition), {db}",
                     *cells, "-", verdict(None if unfinished is None else unfinished == 0, "0")])  # fmt: skip
    if any("park" in summary.get(n, {}) for n in names):
        cells = []
        for n in names:
            park = summary.get(n, {}).get("park")
            cells.append(
                "-" if park is None
                else f"{park['bytes_per_run'] / 1024:.1f} KB, {park['gc_objects_per_run']:.2f} objects"
                + ("" if park["released"] else " (not all released)")
            )  # fmt: skip
        ours_park = summary.get(OURS, {}).get("park")
        ok = None
        if ours_park is not None:
            ok = (ours_park["released"] and ours_park["bytes_per_run"] <= 1024
                  and ours_park["gc_objects_per_run"] <= 0.05)  # fmt: skip
        parks = [summary[n]["park"] for n in names if "park" in summary.get(n, {})]
        where = "/".join(
            sorted({"Postgres" if p.get("db") == "postgres" else "SQLite" for p in parks})
        )
        runs = "/".join(sorted({f"{p['runs']:,}" for p in parks}))
        rows.append([f"memory per parked run after idle release ({runs} parked, {where}; RSS, Python objects)",
                     *cells, "-", verdict(ok, "0 (<= 1 KB RSS, <= 0.05 objects)")])  # fmt: skip
    return rows


def _markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    load = ", ".join(f"{x:g}" for x in machine["load_average"])
    names = [
        n
        for n in (OURS, THEIRS, "peer-tuned")
        if n in results["summary"] or n in results["unavailable"]
    ]
    headers = {OURS: "stepstream (dbos current)", THEIRS: "peer (defaults)",
               "peer-tuned": "peer (10 ms polls)"}  # fmt: skip
    lines = [
        (
            f"Machine: {machine['cpus']} CPUs (harness, drivers and Postgres share them), "
            f"{machine['platform']}, Python {machine['python']}; load average at the end {load}; "
            f"{results['date']}; median of {results['repetitions']} repetitions, the sides "
            f"alternating; each driver in a process of its own on a fresh database (SQLite "
            f"file, or a database in a throwaway Postgres 15 cluster on 127.0.0.1). Peer: "
            f"{results['peer']}. No telemetry on either side."
        ),
        "",
    ]
    for name, why in results["unavailable"].items():
        lines += [f"**{name} side: not available** ({why}).", ""]
    lines += [
        f"| measure | {' | '.join(headers[n] for n in names)} | ratio (peer / stepstream) | target |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    lines += [f"| {' | '.join(r)} |" for r in _rows(results, names)]
    if results.get("notes"):
        lines += ["", "Notes:", *(f"- {note}" for note in results["notes"])]
    errors = [f"- {n}: {e}" for n, s in results["summary"].items() for e in s.get("errors", [])]
    if errors:
        lines += ["", "Failed measurements (not in the medians):", *errors]
    lines += [
        "",
        (
            "How each figure is taken (benchmarks/durable.py): time per step = wall time of "
            "`await wf.run()` of a run of N sequential steps / N (result delivery included: "
            "the peer's 1 s result poll adds at most 1 s / N); checkpoint cost = durable per "
            "step - in-memory per step, both in the same process; time between step starts "
            "shows whether a step waits for the previous one's checkpoint; rows left per step "
            "= rows added to all tables by the durable chain / N; journal commits per step "
            "from the runtime's checkpoint observer (stepstream only); Postgres CPU = CPU of "
            "the cluster's processes (/proc) during the durable chain / N; 3-step run = wall "
            "time of `await wf.run()`; live stream = a step writes an event every 20 ms, "
            "latency to the reader of handler.stream_events(); recovery = from the restarted "
            "process's spawn to the last run's last step (counter file), every run parked in "
            "step 2 of 3 for --settle seconds (default 1) before `kill -9`; a completed step run again = a step whose "
            "completion was in the counter file before the kill and that started again after "
            "it; parked memory = (RSS after release - RSS before starting them) / runs, after "
            "gc.collect(), and the growth in gc-tracked objects / runs; stepstream's runs wait "
            "in ctx.wait_for_event (its idle release also takes the ask-then-answer-step "
            "form, which has no step in flight), are "
            "started 500 at a time and released by runtime.release_idle() after each batch "
            "(the peer releases as runs idle 2 s), counted by the run_parked observer, from "
            "a baseline after a warm-up batch."
        ),
    ]
    return "\n".join(lines) + "\n"


def render(out: Path) -> None:
    """Rewrite durable.md from durable.json."""
    results = json.loads((out / "durable.json").read_text())
    (out / "durable.md").write_text(_markdown(results))


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--park-reps", type=int, default=1, help="repetitions of park")
    parser.add_argument("--park-runs", type=int, default=None, help="parked runs (10,000)")
    parser.add_argument("--only", default="bench,recovery,park", help="bench,recovery,park")
    parser.add_argument("--dbs", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument(
        "--sides", default=f"{OURS},{THEIRS}", help="stepstream,peer,peer-tuned (peer, 10 ms polls)"
    )
    parser.add_argument("--stepstream-src", type=Path, default=ROOT / "src")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds parked before the kill (recovery)"
    )
    parser.add_argument(
        "--park-db",
        default="postgres",
        help="park on postgres (default: the peer fails on SQLite at 10,000) or sqlite",
    )
    parser.add_argument("--note", action="append", default=[], help="a note for durable.md")
    parser.add_argument(
        "--merge", action="store_true", help="keep the old durable.json's other sides/sections"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite durable.md")
    args = parser.parse_args()
    # A SIGTERM (timeout, a CI limit) unwinds like Ctrl-C: drivers and Postgres are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.render:
        render(args.out)
        return
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    for key in ("only", "dbs", "sides"):
        setattr(args, key, [x for x in getattr(args, key).split(",") if x])
    run(args)


if __name__ == "__main__":
    main()
