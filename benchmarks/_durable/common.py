"""What both drivers share: the measurements, run against one side's durable runtime.

A driver (``peer.py``, ``ours.py``) sets ``BENCH_DURABLE_LIB``, imports ``flows`` and
calls :func:`main` with a :class:`Side`, which knows how to build that library's
in-memory and durable workflows. Every operation prints one JSON object on its last
stdout line (``{"error": ...}`` when it could not run). Standard library only: the peer's
venv has none of our code.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

TICK = os.sysconf("SC_CLK_TCK")


class Side(Protocol):
    """One library's way of making workflows and running them durably."""

    name: str

    def memory(self, key: str) -> Any:
        """An in-memory instance of ``flows.WORKFLOWS[key]``."""

    def durable(self, key: str) -> Any:
        """A durable instance on the driver's database (made before :meth:`launch`)."""

    async def launch(self) -> None:
        """Start the durable runtime (recovering this executor's unfinished runs)."""

    async def close(self) -> None:
        """Stop the durable runtime."""

    async def park(self, n: int, idle_timeout: float, deadline: float) -> dict[str, Any]:
        """Start ``n`` runs of ``Hitl``, wait until all are parked and released."""


def emit(obj: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed (the harness reads the last one)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def rss() -> int:
    """This process's resident set, bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pg_cpu(postmaster: int | None) -> float | None:
    """CPU seconds used by a Postgres cluster so far: the postmaster, its exited children
    (cutime/cstime: it reaps them), and its live children (the backends, the writers)."""
    if postmaster is None:
        return None
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(proc.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(x) for x in fields[11:15])
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / TICK


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _timed(coro: Awaitable[Any], deadline: float, what: str) -> Any:
    left = deadline - time.monotonic()
    if left <= 0:
        msg = f"out of time before {what}"
        raise TimeoutError(msg)
    return await asyncio.wait_for(coro, timeout=left)


async def chain(wf: Any, n: int, deadline: float) -> dict[str, float]:
    """One run of ``n`` sequential steps: its wall time per step (``await wf.run()``, result
    delivery included), and the time between consecutive step starts."""
    import flows  # noqa: PLC0415

    flows.STAMPS.clear()
    t0 = time.perf_counter()
    result = await _timed(wf.run(n=n), deadline, f"a chain of {n} steps")
    wall = time.perf_counter() - t0
    stamps = list(flows.STAMPS)
    if result != n or len(stamps) != n:
        msg = f"chain of {n}: result {result!r}, {len(stamps)} steps ran"
        raise RuntimeError(msg)
    return {
        "per_step_ms": wall * 1000 / n,
        "between_starts_ms": (stamps[-1] - stamps[0]) * 1000 / (n - 1),
        "wall_ms": wall * 1000,
    }


def sql(url: str, query: str) -> list[tuple[str, ...]]:
    """The rows of ``query`` on the database at ``url`` (as text), [] if it fails."""
    if url.startswith("sqlite:///"):
        try:
            with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
                return [tuple(str(x) for x in row) for row in db.execute(query)]
        except sqlite3.Error:
            return []
    psql = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin")) / "psql"
    done = subprocess.run(
        [str(psql), "-At", "-d", url, "-c", query],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return []
    return [tuple(line.split("|")) for line in done.stdout.splitlines() if line]


def db_rows(url: str) -> int | None:
    """Rows in every table of the database at ``url`` (what the runs left written)."""
    if url.startswith("sqlite:///"):
        tables = sql(url, "SELECT name FROM sqlite_master WHERE type = 'table'")
        counts = [sql(url, f'SELECT count(*) FROM "{t[0]}"') for t in tables]  # noqa: S608
        return sum(int(c[0][0]) for c in counts if c)
    found = sql(
        url,
        "SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c "
        "FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text::bigint) "
        "FROM information_schema.tables WHERE table_type = 'BASE TABLE' AND table_schema "
        "NOT IN ('pg_catalog', 'information_schema')",
    )
    return int(found[0][0]) if found and found[0][0] else None


def dbos_statuses(url: str) -> dict[str, int]:
    """How many DBOS workflows are in each status (DBOS's own table, both versions)."""
    table = "workflow_status" if url.startswith("sqlite") else "dbos.workflow_status"
    rows = sql(url, f"SELECT status, count(*) FROM {table} GROUP BY status")  # noqa: S608
    return {status: int(count) for status, count in rows}


async def stream_latency(wf: Any, n: int, gap: float, deadline: float) -> dict[str, Any]:
    """Latency from write_event_to_stream (in a step) to a reader of handler.stream_events()."""
    import flows  # noqa: PLC0415

    handler = wf.run(n=n, gap=gap)
    lat: list[float] = []

    async def read() -> None:
        lat.extend(
            [
                (time.perf_counter_ns() - ev.ns) / 1e6
                async for ev in handler.stream_events()
                if isinstance(ev, flows.Progress)
            ]
        )

    await _timed(read(), deadline, "the stream")
    await _timed(handler, deadline, "the streaming run's result")
    if len(lat) != n:
        msg = f"stream: {len(lat)} of {n} events read"
        raise RuntimeError(msg)
    return {"n": n, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat)}


async def bench(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """(a) per-step time in memory and durable, (b) 3-step runs, the live stream's latency."""
    deadline = time.monotonic() + args.time_limit
    out: dict[str, Any] = {"side": side.name, "config": args.config, "db": args.db_kind}
    mem = side.memory("chain")
    await chain(mem, 20, deadline)  # warm up
    out["memory_chain"] = await chain(mem, args.n, deadline)
    durable = {key: side.durable(key) for key in ("chain", "three", "streamer")}
    t0 = time.perf_counter()
    await _timed(side.launch(), deadline, "launch")
    out["launch_ms"] = (time.perf_counter() - t0) * 1000
    await chain(durable["chain"], 5, deadline)  # warm up
    await _timed(durable["three"].run(tag="warm"), deadline, "a warm-up run")
    rows0 = db_rows(args.db)
    cpu0 = pg_cpu(args.pg_pid)
    out["durable_chain"] = await chain(durable["chain"], args.n, deadline)
    cpu1 = pg_cpu(args.pg_pid)
    rows1 = db_rows(args.db)
    if cpu0 is not None and cpu1 is not None:
        out["pg_cpu_ms_per_step"] = (cpu1 - cpu0) * 1000 / args.n
    if rows0 is not None and rows1 is not None:
        out["rows_per_step"] = (rows1 - rows0) / args.n
    commits = getattr(side, "commits", None)
    if commits is not None:  # an untimed chain, observed: its journal commits
        found = await _timed(commits(durable["chain"], args.n), deadline, "commits")
        if found is not None:
            out["commits_per_step"], out["commit_ms"] = found["per_step"], found["median_ms"]
    walls = []
    for i in range(args.k):
        t0 = time.perf_counter()
        result = await _timed(durable["three"].run(tag=f"t{i}"), deadline, "a 3-step run")
        walls.append((time.perf_counter() - t0) * 1000)
        if result != f"t{i}":
            msg = f"3-step run {i}: result {result!r}"
            raise RuntimeError(msg)
    out["three_ms"] = {"median": statistics.median(walls), "min": min(walls), "max": max(walls)}
    out["stream"] = await stream_latency(durable["streamer"], args.stream_n, args.gap, deadline)
    await side.close()
    return out


async def recover_start(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """Start ``runs`` runs of Park3 and hold them (the harness kills us once all are parked)."""
    wf = side.durable("park3")
    await side.launch()
    handlers = [wf.run(tag=f"r{i}") for i in range(args.runs)]
    emit({"started": len(handlers), "t": time.time()})
    await asyncio.sleep(args.time_limit)  # the harness kill -9s us long before this
    return {"error": "recover-start was not killed"}


def _finished(counter: Path) -> int:
    """How many runs' last step has completed, by the counter file."""
    return sum(1 for line in counter.read_text().splitlines() if line.endswith(" s3 done"))


async def recover_finish(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """Launch (which recovers the killed runs), wait until every run's last step finished."""
    t_start = time.time()
    side.durable("park3")
    counter = Path(os.environ["BENCH_DURABLE_COUNTER"])
    await asyncio.wait_for(side.launch(), timeout=args.time_limit)
    t_launched = time.time()
    deadline = time.monotonic() + args.time_limit
    finished, idle, next_check = 0, 0, time.monotonic() + 1.0
    while time.monotonic() < deadline:
        finished = _finished(counter)
        if finished >= args.runs:
            break
        if time.monotonic() >= next_check:  # stop early once DBOS has nothing left to run
            statuses = await asyncio.to_thread(dbos_statuses, args.db)
            pending = statuses.get("PENDING", 0) + statuses.get("ENQUEUED", 0)
            idle = idle + 1 if statuses and pending == 0 else 0
            if idle >= 5:
                break
            next_check = time.monotonic() + 1.0
        await asyncio.sleep(0.02)
    t_done = time.time()  # no close(): the process exits at once after the report
    return {
        "t_start": t_start,
        "t_launched": t_launched,
        "t_done": t_done,
        "finished": finished,
        "runs": args.runs,
        "dbos_statuses": await asyncio.to_thread(dbos_statuses, args.db),
    }


async def park(side: Side, args: argparse.Namespace) -> dict[str, Any]:
    """(d) resident memory of ``runs`` runs parked on a human's answer, after idle release."""
    deadline = time.monotonic() + args.time_limit
    return {"db": args.db_kind, **await side.park(args.runs, args.idle_timeout, deadline)}


OPS: dict[str, Callable[[Side, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]] = {
    "bench": bench,
    "recover-start": recover_start,
    "recover-finish": recover_finish,
    "park": park,
}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The drivers' common command line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("op", choices=sorted(OPS))
    parser.add_argument("--db", required=True, help="sqlite:///path or postgresql://...")
    parser.add_argument("--pg-pid", type=int, default=None, help="postmaster pid (CPU)")
    parser.add_argument("--n", type=int, default=100, help="steps in the chain")
    parser.add_argument("--k", type=int, default=10, help="sequential 3-step runs")
    parser.add_argument("--stream-n", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between events")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--idle-timeout", type=float, default=2.0)
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--config", default="default", help="side-specific settings")
    args = parser.parse_args(argv)
    args.db_kind = "postgres" if args.db.startswith("postgres") else "sqlite"
    return args


def main(make_side: Callable[[argparse.Namespace], Side]) -> None:
    """Run one operation and print its JSON; exit 1 with ``{"error": ...}`` on failure."""
    args = parse()
    try:
        side = make_side(args)
        result: dict[str, Any] = asyncio.run(OPS[args.op](side, args))
    except Exception as error:  # noqa: BLE001 - reported to the harness, which fails loudly
        emit({"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()})
        sys.exit(1)
    gc.collect()
    emit(result)
    sys.stdout.flush()
    os._exit(0)  # do not wait for a runtime's leftover threads
