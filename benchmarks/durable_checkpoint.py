"""What durability costs on SQLite or Postgres: one checkpoint, one step, a 3-step run.

``python benchmarks/durable_checkpoint.py [--runs N] [--steps K] [--database URL]`` in a
fresh directory (by default it writes ``.bench-durable/durable.sqlite``; ``--database
postgresql://...`` measures on Postgres, in a database that should be new). Reports medians:

- commit: one journal batch written and committed (``stepstream.checkpoint.duration``),
  during the K-step chains (their steps run beside the commit: it shares the GIL) and
  during the 3-step runs;
- step: per step of a K-step sequential chain, durable minus in memory (what a step's
  completion costs until it is recorded: the queueing, the ctx snapshot and the commit);
- 3-step run: the wall time of ``await wf.run()`` of a 3-step chain, durable and in memory.

The peer's numbers to compare with (issue 16, llama-agents-dbos 0.7.0 on dbos 2.31): a
step checkpoint 21-28 ms on SQLite and ~40 ms on Postgres, a 3-step run 85-159 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from pathlib import Path

from stepstream import Context, Workflow, step
from stepstream.durable import DBOSRuntime
from stepstream.events import Event, StartEvent, StopEvent
from stepstream.telemetry import Observer, RunInfo, observe

STORE = Path(".bench-durable")


class Next(Event):
    """The chain's step-to-step event."""

    i: int


class Chain(Workflow):
    """K sequential steps (``length`` loops of ``hop``)."""

    length = 3

    @step
    async def begin(self, ev: StartEvent) -> Next:
        """First step."""
        return Next(i=1)

    @step
    async def hop(self, ctx: Context, ev: Next) -> Next | StopEvent:
        """One step per hop, until ``length``."""
        if ev.i + 1 >= self.length:
            return StopEvent(result=ev.i + 1)
        return Next(i=ev.i + 1)


class Commits(Observer):
    """Keeps each journal commit's duration."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def checkpoint_committed(self, run: RunInfo, seconds: float) -> None:
        """One commit."""
        self.seconds.append(seconds)


async def timed_runs(wf: Chain, runs: int) -> list[float]:
    """Wall time of ``runs`` sequential runs (after two warm-up runs)."""
    for _ in range(2):
        await wf.run()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await wf.run()
        times.append(time.perf_counter() - started)
    return times


def ms(values: list[float]) -> str:
    """Median and 90th percentile in milliseconds."""
    ordered = sorted(values)
    p90 = ordered[int(len(ordered) * 0.9)]
    return f"median {statistics.median(ordered) * 1e3:.2f} ms, p90 {p90 * 1e3:.2f} ms"


async def main(runs: int, steps: int, database: str | None) -> None:
    """Measure and print."""
    shutil.rmtree(STORE, ignore_errors=True)
    runtime = DBOSRuntime(database or f"sqlite:///{(STORE / 'durable.sqlite').resolve()}")
    durable3, memory3 = Chain(runtime=runtime), Chain()
    durable_k, memory_k = Chain(runtime=runtime), Chain()
    durable_k.length = memory_k.length = steps
    await runtime.launch()
    commits, alone = Commits(), Commits()
    try:
        with observe(commits):
            long_durable = await timed_runs(durable_k, max(3, runs // 10))
        long_memory = await timed_runs(memory_k, max(3, runs // 10))
        with observe(alone):
            short_durable = await timed_runs(durable3, runs)
        short_memory = await timed_runs(memory3, runs)
    finally:
        await runtime.destroy()
    per_step = [
        (d - m) / steps for d, m in zip(sorted(long_durable), sorted(long_memory), strict=True)
    ]
    print(f"commit (one journal batch): {ms(commits.seconds)} over {len(commits.seconds)}")
    print(f"  the same, in 3-step runs (no step running beside it): {ms(alone.seconds)}")
    print(f"step completion recorded ({steps}-step chain, durable - in memory): {ms(per_step)}")
    print(f"3-step run, durable:   {ms(short_durable)} over {runs} runs")
    print(f"3-step run, in memory: {ms(short_memory)} over {runs} runs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--database", default=None, help="a database URL (default: SQLite)")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.steps, args.database))
