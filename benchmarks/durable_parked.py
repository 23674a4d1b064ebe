"""What a parked durable run costs in memory: RSS and Python heap over many released runs.

``python benchmarks/durable_parked.py [--runs 10000] [--batch 500] [--tracemalloc]``, in a
fresh directory (it writes ``.bench-parked/durable.sqlite``). Starts ``--runs`` durable
runs of a one-step workflow that asks a question and waits (``wait_for_event``), with
``DBOSRuntime(idle_release_after=0.2)``, ``--batch`` at a time, and waits until each batch
is parked (released: task ended, workflow parked in the database), dropping every handler.
Then, after ``gc.collect()``, it reports per parked run:

- RSS growth (``/proc/self/statm``; pages, so approximate), from after a warm-up batch;
- Python heap growth: ``sys.getallocatedblocks()`` (blocks) and, with ``--tracemalloc``
  (slower), the bytes traced by ``tracemalloc``;
- objects the garbage collector tracks, and Run/Context objects still alive (target 0).

The target (issue 16): 0 bytes of Python heap per parked run. SQLite's page cache and
SQLAlchemy's connections grow with the database up to their own bounds, which is RSS but
not per-run state; the figure per run is what remains after dividing that out.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import sys
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from stepstream import Context, Workflow, step
from stepstream.durable import DBOSRuntime
from stepstream.events import HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent
from stepstream.telemetry import Observer, RunInfo, observe

STORE = Path(".bench-parked")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Asks(Workflow):
    """One step that asks and waits for the answer."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Ask, wait, answer."""
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        return StopEvent(result=answer.get("response"))


class Parked(Observer):
    """Counts the runs released."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()

    def run_parked(self, run: RunInfo) -> None:
        """One more parked run."""
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def until(self, target: int) -> None:
        """Return once ``target`` runs are parked."""
        self.target = target
        self.reached.clear()
        if self.count < target:
            await self.reached.wait()


def rss() -> int:
    """The process's resident set size, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as statm:  # noqa: PTH123 - one read
        return int(statm.read().split()[1]) * PAGE


def heap() -> dict[str, Any]:
    """RSS, allocated blocks, gc-tracked objects (and by type), traced bytes (0 untraced)."""
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    objects = gc.get_objects()
    return {
        "rss": rss(),
        "blocks": sys.getallocatedblocks(),
        "objects": len(objects),
        "traced": traced,
        "types": Counter(type(o).__qualname__ for o in objects),
    }


async def park_batch(wf: Asks, parked: Parked, n: int) -> float:
    """Start ``n`` runs; return once all of them are parked (the seconds it took)."""
    started = time.perf_counter()
    target = parked.count + n
    handlers = [wf.run() for _ in range(n)]
    del handlers  # nobody holds a run: a parked run must leave nothing behind
    await parked.until(target)
    return time.perf_counter() - started


def survivors() -> tuple[int, int]:
    """Run and Context objects alive (the runtime's, not any run's: expect 0 once idle)."""
    gc.collect()
    runs = sum(1 for o in gc.get_objects() if type(o).__name__ in {"Run", "FanRun"})
    contexts = sum(1 for o in gc.get_objects() if isinstance(o, Context))
    return runs, contexts


async def main(runs: int, batch: int) -> dict[str, Any]:
    """Measure (see the module docstring); return the figures."""
    shutil.rmtree(STORE, ignore_errors=True)
    runtime = DBOSRuntime(
        f"sqlite:///{(STORE / 'durable.sqlite').resolve()}", idle_release_after=0.2
    )
    wf = Asks(runtime=runtime, timeout=None)
    parked = Parked()
    with observe(parked):
        await runtime.launch()
        # Warm-up: imports, caches, and the pools (threads, connections) a batch grows.
        await park_batch(wf, parked, batch)
        await asyncio.sleep(0.5)
        before = heap()
        seconds = 0.0
        done = 0
        while done < runs:
            n = min(batch, runs - done)
            seconds += await park_batch(wf, parked, n)
            done += n
            now = heap()
            print(
                f"{done:>6} parked  rss {(now['rss'] - before['rss']) / done:8.1f} B/run  "
                f"blocks {(now['blocks'] - before['blocks']) / done:7.2f}/run",
                flush=True,
            )
        await asyncio.sleep(0.5)
        after = heap()
        alive = survivors()
        await runtime.destroy()
    return {"runs": runs, "seconds": seconds, "before": before, "after": after, "alive": alive}


def report(result: dict[str, Any]) -> None:
    """Print the per-run figures."""
    runs = result["runs"]
    before, after = result["before"], result["after"]
    per = {key: (after[key] - before[key]) / runs for key in before if key != "types"}
    print(f"parked runs: {runs} in {result['seconds']:.1f} s")
    print(f"RSS growth per parked run:          {per['rss']:10.1f} bytes")
    print(f"allocated blocks per parked run:    {per['blocks']:10.3f}")
    print(f"gc-tracked objects per parked run:  {per['objects']:10.3f}")
    if after["traced"]:
        print(f"traced heap per parked run:         {per['traced']:10.1f} bytes")
    runs_alive, contexts_alive = result["alive"]
    print(f"Run objects alive: {runs_alive}, Context objects alive: {contexts_alive}")
    grown = (after["types"] - before["types"]).most_common(6)
    print("objects that grew: " + ", ".join(f"{name} +{n}" for name, n in grown))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    report(asyncio.run(main(args.runs, args.batch)))
