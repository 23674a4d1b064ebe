"""stepstream's driver: durable runs on DBOS (stepstream.durable), run by benchmarks/durable.py.

What it uses of the durable runtime (docs/durable.md):

- ``DBOSRuntime(url)`` with the system database's URL (``sqlite:///path`` or
  ``postgresql://...``); ``Workflow(..., runtime=runtime)`` registers a workflow;
  ``await runtime.launch()`` starts DBOS and resumes this executor's unfinished runs;
  ``await runtime.destroy()`` stops it;
- the telemetry observer's ``checkpoint_committed(run, seconds)``: journal commits;
- idle release of parked runs: ``await runtime.release_idle()`` releases every run whose
  steps in flight all wait in ``ctx.wait_for_event`` (``DBOSRuntime(idle_release_after=...)``
  does it after that many seconds); ``park`` counts the runs released (``run_parked``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from typing import Any

os.environ["BENCH_DURABLE_LIB"] = "stepstream"

import common
import flows

from stepstream import Context
from stepstream.durable import DBOSRuntime
from stepstream.telemetry import Observer, observe

BATCH = 500  # parked runs started (then released) at a time


class Ours:
    """stepstream's DBOSRuntime on the current dbos release."""

    name = "stepstream"

    def __init__(self, args: argparse.Namespace) -> None:
        self.runtime: Any = DBOSRuntime(args.db)
        self.made: dict[str, Any] = {}

    def memory(self, key: str) -> Any:
        return flows.WORKFLOWS[key](timeout=flows.TIMEOUTS[key])

    def durable(self, key: str) -> Any:
        if key not in self.made:
            cls = flows.WORKFLOWS[key]
            self.made[key] = cls(timeout=flows.TIMEOUTS[key], runtime=self.runtime)
        return self.made[key]

    async def launch(self) -> None:
        await self.runtime.launch()

    async def close(self) -> None:
        for name in ("destroy", "close", "shutdown"):
            stop = getattr(self.runtime, name, None)
            if stop is not None:
                result = stop()
                if asyncio.iscoroutine(result):
                    await result
                return

    async def commits(self, wf: Any, n: int) -> dict[str, float] | None:
        """Journal commits of a chain of ``n`` steps: how many per step (group commit
        batches them) and one commit's median duration (a checkpoint's own cost)."""
        from stepstream.telemetry import Observer, observe  # noqa: PLC0415

        seconds: list[float] = []

        class Commits(Observer):
            def checkpoint_committed(self, run: Any, took: float) -> None:
                seconds.append(took)

        with observe(Commits()):
            await wf.run(n=n)
        if not seconds:
            return None
        return {"per_step": len(seconds) / n, "median_ms": statistics.median(seconds) * 1000}

    async def park(self, n: int, idle_timeout: float, deadline: float) -> dict[str, Any]:
        """``n`` runs parked on ``Answer``, released by ``runtime.release_idle()``.

        The runs ask from inside a step that waits (``HitlWait``): stepstream releases a run
        whose every step in flight waits in ``ctx.wait_for_event`` (docs/durable.md), not one
        with no step in flight (``Hitl``'s ask-then-answer-step form is never released). The
        runs released are counted (observer's ``run_parked``), not assumed.
        """
        del idle_timeout  # release_idle releases at once; the timeout is the runtime's business
        wf = self.durable("hitl_wait")
        parked = _Parked()

        async def start(prefix: str, count: int) -> tuple[list[Any], float]:
            t0 = time.monotonic()
            goal = flows.ASKED[0] + count
            handlers = [wf.run(tag=f"{prefix}{i}") for i in range(count)]
            while flows.ASKED[0] < goal:
                if time.monotonic() > deadline:
                    msg = f"{flows.ASKED[0] - goal + count} of {count} runs parked in time"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.05)
            return handlers, time.monotonic() - t0

        async def released(goal: int) -> float:
            """Release until ``goal`` runs in all are parked (a run still on its way to
            ``wait_for_event`` is released on a later call)."""
            t0 = time.monotonic()
            while parked.count < goal:
                if time.monotonic() > deadline:
                    msg = f"{parked.count} of {goal} runs released in time"
                    raise TimeoutError(msg)
                await asyncio.wait_for(self.runtime.release_idle(), deadline - time.monotonic())
                if parked.count < goal:
                    await asyncio.sleep(0.1)
            return time.monotonic() - t0

        batch = min(n, BATCH)
        with observe(parked):
            await self.launch()
            rss_peak = start_s = release_s = 0.0
            # Warm-up: one batch grows the pools (threads, connections) and caches.
            warm, _ = await start("warm", batch)
            del warm
            await released(batch)
            await asyncio.sleep(0.5)
            gc.collect()
            base = common.rss()
            objects0 = len(gc.get_objects())
            rss_peak = base
            done = 0
            while done < n:  # in batches, as runs park over time (the peer's idle release)
                count = min(batch, n - done)
                handlers, took = await start(f"p{done}-", count)
                start_s += took
                rss_peak = max(rss_peak, common.rss())
                del handlers  # a handler is the caller's; release frees the run's own state
                release_s += await released(batch + done + count)
                done += count
            await asyncio.sleep(0.5)
            gc.collect()
            after = common.rss()
            objects1 = len(gc.get_objects())
            alive = _alive()
            await self.close()
        return {
            "side": self.name,
            "runs": n,
            "released": parked.count - batch == n,
            "released_runs": parked.count - batch,
            "runs_contexts_alive": alive,
            "note": f"HitlWait (ctx.wait_for_event), {batch} at a time, release_idle() each",
            "start_s": start_s,
            "release_wait_s": release_s,
            "rss_base": base,
            "rss_parked": rss_peak,
            "rss_released": after,
            "bytes_per_run": (after - base) / n,
            "gc_objects_per_run": (objects1 - objects0) / n,
        }


class _Parked(Observer):
    """Counts the runs released (``run_parked``)."""

    def __init__(self) -> None:
        self.count = 0

    def run_parked(self, run: Any) -> None:
        self.count += 1


def _alive() -> int:
    """Run and Context objects alive (expect 0: every run released, no handler held)."""
    objects = gc.get_objects()
    return sum(1 for o in objects if type(o).__name__ in {"Run", "FanRun"}) + sum(
        1 for o in objects if isinstance(o, Context)
    )


if __name__ == "__main__":
    common.main(Ours)
