"""stepstream's driver: durable runs on DBOS (stepstream.durable), run by benchmarks/durable.py.

What it uses of the durable runtime (docs/durable.md):

- ``DBOSRuntime(url)`` with the system database's URL (``sqlite:///path`` or
  ``postgresql://...``); ``Workflow(..., runtime=runtime)`` registers a workflow;
  ``await runtime.launch()`` starts DBOS and resumes this executor's unfinished runs;
  ``await runtime.destroy()`` stops it;
- the telemetry observer's ``checkpoint_committed(run, seconds)``: journal commits;
- idle release of parked runs: ``await runtime.release_idle()`` releases every run that
  waits for an event (``DBOSRuntime(idle_release_after=...)`` does it after that many
  seconds); with a runtime without it, ``park`` measures the runs unreleased and says so.
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

from stepstream.durable import DBOSRuntime


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
        """``n`` runs parked on ``Answer``; released through the runtime's hook when it has one."""
        del idle_timeout  # the hook releases at once; the timeout is the runtime's business
        wf = self.durable("hitl")
        await self.launch()
        release = getattr(self.runtime, "release_idle", None)

        async def start(prefix: str, count: int) -> tuple[list[Any], float]:
            t0 = time.monotonic()
            goal = flows.ASKED[0] + count
            handlers = [wf.run(tag=f"{prefix}{i}") for i in range(count)]
            while flows.ASKED[0] < goal:
                if time.monotonic() > deadline:
                    msg = f"{flows.ASKED[0] - goal + count} of {count} runs parked in time"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # the last checkpoints committed
            return handlers, time.monotonic() - t0

        async def released() -> float:
            t0 = time.monotonic()
            if release is not None:
                await asyncio.wait_for(release(), deadline - time.monotonic())
            return time.monotonic() - t0

        warm, _ = await start("warm", 50)
        await released()
        del warm
        gc.collect()
        base = common.rss()
        objects0 = len(gc.get_objects())
        handlers, start_s = await start("p", n)
        rss_parked = common.rss()
        # A handler is the caller's; what release frees is the run's own state.
        del handlers
        release_s = await released()
        gc.collect()
        after = common.rss()
        objects1 = len(gc.get_objects())
        await self.close()
        return {
            "side": self.name,
            "runs": n,
            "released": release is not None,
            "note": "" if release is not None else "no runtime.release_idle(): not released",
            "start_s": start_s,
            "release_wait_s": release_s,
            "rss_base": base,
            "rss_parked": rss_parked,
            "rss_released": after,
            "bytes_per_run": (after - base) / n,
            "gc_objects_per_run": (objects1 - objects0) / n,
        }


if __name__ == "__main__":
    common.main(Ours)
