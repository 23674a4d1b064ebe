"""The peer's driver: llama-agents-dbos on DBOS, run by benchmarks/durable.py in the peer venv.

``--config default`` is the peer as a user gets it (``DBOSRuntime()``, DBOS's default 1 s
polls); ``--config tuned`` uses 10 ms polls, the settings of the peer's own test fixtures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time
from typing import Any

os.environ["BENCH_DURABLE_LIB"] = "llama"

import common
import flows
from dbos import DBOS
from llama_agents.dbos import DBOSRuntime


class Peer:
    """llama-agents-dbos 0.7.0 (DBOSRuntime on DBOS 2.31)."""

    name = "peer"

    def __init__(self, args: argparse.Namespace) -> None:
        self.tuned = args.config == "tuned"
        config: dict[str, Any] = {
            "name": "durable-bench",
            "system_database_url": args.db,
            "run_admin_server": False,
        }
        if self.tuned:
            config["notification_listener_polling_interval_sec"] = 0.01
        DBOS(config=config)  # type: ignore[arg-type]
        self.runtime = DBOSRuntime(polling_interval_sec=0.01) if self.tuned else DBOSRuntime()
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
        await self.runtime.destroy()

    async def park(self, n: int, idle_timeout: float, deadline: float) -> dict[str, Any]:
        """Parked runs through the peer's server runtime, whose decorator releases idle runs."""
        from llama_agents.server import WorkflowServer  # noqa: PLC0415
        from llama_agents.server._store.abstract_workflow_store import (  # noqa: PLC0415
            HandlerQuery,
        )

        wf = self.durable("hitl")
        await self.runtime.launch()
        store = self.runtime.create_workflow_store()
        server_runtime = self.runtime.build_server_runtime(idle_timeout=idle_timeout)
        server = WorkflowServer(runtime=server_runtime, workflow_store=store)
        server.add_workflow("hitl", wf, additional_events=[flows.Answer])
        await server.start()
        service = server._service  # noqa: SLF001 - start runs in-process, no HTTP in the way

        async def released() -> int:
            return len(await store.query(HandlerQuery(is_idle=True)))

        async def start(prefix: str, count: int) -> float:
            sem = asyncio.Semaphore(16)

            async def one(i: int) -> None:
                async with sem:
                    await service.start_workflow(wf, handler_id=f"{prefix}{i}")

            t0 = time.monotonic()
            await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(count))), deadline - time.monotonic()
            )
            return time.monotonic() - t0

        async def wait_released(count: int) -> float:
            t0 = time.monotonic()
            while (done := await released()) < count:
                if time.monotonic() > deadline:
                    msg = f"{done} of {count} runs released before the time limit"
                    raise TimeoutError(msg)
                await asyncio.sleep(0.5)
            return time.monotonic() - t0

        warm = 50
        await start("warm", warm)  # the code paths and the allocator warmed
        await wait_released(warm)
        gc.collect()
        base = common.rss()
        objects0 = len(gc.get_objects())
        start_s = await start("p", n)
        release_s = await wait_released(warm + n)
        await asyncio.sleep(1.0)
        gc.collect()
        after = common.rss()
        objects1 = len(gc.get_objects())
        await server.stop()
        return {
            "side": self.name,
            "runs": n,
            "idle_timeout_s": idle_timeout,
            "start_s": start_s,
            "release_wait_s": release_s,
            "rss_base": base,
            "rss_released": after,
            "bytes_per_run": (after - base) / n,
            "gc_objects_per_run": (objects1 - objects0) / n,
        }


if __name__ == "__main__":
    common.main(Peer)
