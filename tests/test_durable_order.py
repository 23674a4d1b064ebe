"""A durable run's next step starts only once the step before it is recorded.

So a step whose successor ran (and had its side effects) is never run again after a
crash: "completed" means the same to the journal and to anyone watching the steps.
The database is held locked by the test, so commits wait, deterministically.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.events import Event
from stepstream.events import StartEvent
from stepstream.events import StopEvent

pytest.importorskip("dbos")

from stepstream.durable import DBOSRuntime


class Done(Event):
    """Step one's result."""

    n: int


EFFECTS: list[str] = []
GATE = threading.Event()


class TwoSteps(Workflow):
    """One waits for the test's gate, then two runs."""

    @step
    async def one(self, ev: StartEvent) -> Done:
        """Record a side effect once the test opens the gate."""
        EFFECTS.append("one-started")
        await asyncio.to_thread(GATE.wait, 20)
        EFFECTS.append("one")
        return Done(n=1)

    @step
    async def two(self, ctx: Context, ev: Done) -> StopEvent:
        """Record a side effect."""
        EFFECTS.append("two")
        return StopEvent(result=ev.n + 1)


async def wait_until(check: Callable[[], bool], timeout: float = 20) -> None:
    """Poll ``check`` (a list filled by the steps) until it is true."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110 - polling a plain list
            await asyncio.sleep(0.01)


@pytest.mark.asyncio
async def test_a_step_waits_for_its_predecessor_to_be_recorded(tmp_path: Path) -> None:
    """While the database refuses writes, two does not start; once it takes them, it does."""
    EFFECTS.clear()
    GATE.clear()
    path = tmp_path / "durable.sqlite"
    runtime = DBOSRuntime(f"sqlite:///{path}")
    wf = TwoSteps(runtime=runtime, timeout=60)
    await runtime.launch()
    try:
        handler = wf.run()
        await wait_until(lambda: "one-started" in EFFECTS)
        lock = sqlite3.connect(path, timeout=30, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")  # every commit of the run waits from now on
        try:
            GATE.set()
            await wait_until(lambda: "one" in EFFECTS)
            await asyncio.sleep(0.5)
            assert EFFECTS == ["one-started", "one"]  # two waits for one's checkpoint
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        assert await asyncio.wait_for(handler, 30) == 2
        assert EFFECTS == ["one-started", "one", "two"]
    finally:
        await runtime.destroy()
