"""Durable runs on Postgres when the database goes away for a few seconds mid-run.

DBOS retries every system database operation that fails with a connection error, with
a backoff (1 s at first, doubling, up to 60 s): a run waits while the database is down
and goes on once it is back. The other durable tests run on Postgres too (the
``durable_url`` fixture); this one stops and starts a server of its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from _postgres import PostgresServer
from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.events import Event
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.handler import WorkflowHandler

pytest.importorskip("dbos")

from stepstream.durable import DBOSRuntime


class Item(Event):
    """A numbered event."""

    n: int


class Steady(Workflow):
    """Three steps; ``middle`` waits for ``gate``; each counts its runs in ``ran``."""

    gate: asyncio.Event
    waiting: asyncio.Event
    ran: list[str]

    @step
    async def begin(self, ctx: Context, ev: StartEvent) -> Item:
        """Stream 0, go on with 1."""
        self.ran.append("begin")
        ctx.write_event_to_stream(Item(n=0))
        return Item(n=1)

    @step
    async def middle(self, ctx: Context, ev: Item) -> StopEvent:
        """Stream the item, wait for the gate, stream 2, end."""
        self.ran.append("middle")
        ctx.write_event_to_stream(ev)
        self.waiting.set()
        await self.gate.wait()
        ctx.write_event_to_stream(Item(n=2))
        return StopEvent(result=f"done {int(ev.n) + 2}")


async def items(handler: WorkflowHandler, after: int | None = None) -> list[object]:
    """The item numbers of a stream, and the terminal event's type name."""
    events = handler.stream_events() if after is None else handler.stream_events(after=after)
    return [e.n if isinstance(e, Item) else type(e).__name__ async for e in events]


@pytest.mark.asyncio
async def test_a_run_waits_while_postgres_is_down_and_finishes_losing_nothing(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """Postgres stopped mid-run for ~3 s: the run pauses, then ends as it would have."""
    runtime = DBOSRuntime(own_postgres.database_url("fault"))
    steady = Steady(runtime=runtime, timeout=120)
    steady.gate, steady.waiting, steady.ran = asyncio.Event(), asyncio.Event(), []
    await runtime.launch()
    try:
        handler = steady.run()
        live = asyncio.create_task(items(handler))
        await steady.waiting.wait()
        await asyncio.sleep(0.3)  # begin's completion is committed
        await asyncio.to_thread(own_postgres.stop)
        down = time.monotonic()
        steady.gate.set()  # middle ends: its events and the run's end wait for the database
        started_while_down = steady.run()  # a new run: recorded once the database is back
        await asyncio.sleep(3)
        assert not handler.done()
        assert steady.ran == ["begin", "middle"]  # the new run's first step waits too
        await asyncio.to_thread(own_postgres.start)
        async with asyncio.timeout(90):
            assert await handler == "done 3"
            assert await started_while_down == "done 3"
        assert time.monotonic() - down >= 3
        assert await live == [0, 1, 2, "StopEvent"]
        assert await items(handler, after=-1) == [0, 1, 2, "StopEvent"]  # all recorded
        assert await items(started_while_down, after=-1) == [0, 1, 2, "StopEvent"]
        assert steady.ran == ["begin", "middle", "begin", "middle"]  # none ran twice
    finally:
        steady.gate.set()
        await runtime.destroy()
