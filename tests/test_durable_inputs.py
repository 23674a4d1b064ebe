"""Events the caller sends into a durable run are recorded when they arrive.

In-process checks, and a kill -9 between the acknowledgement of an answer and the end of
the step that took it (tests/_durable_inputs_app.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import stepstream
from stepstream import Context
from stepstream import Event
from stepstream import Workflow
from stepstream import step
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent

pytest.importorskip("dbos")

from stepstream.durable import DBOSRuntime

APP = Path(__file__).resolve().parent / "_durable_inputs_app.py"
SRC = str(Path(stepstream.__file__).resolve().parent.parent)


def start(directory: Path, mode: str) -> subprocess.Popen[str]:
    """Start the app in ``mode`` on the database in ``directory``."""
    return subprocess.Popen(
        [sys.executable, str(APP), str(directory), mode],
        env={**os.environ, "PYTHONPATH": SRC},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_an_acknowledged_answer_survives_a_kill_before_its_step_ends(tmp_path: Path) -> None:
    """kill -9 after ``await handler.send_event`` returned, while the answered step works:
    the resumed run has the answer without it being sent again."""
    proc = start(tmp_path, "answer")
    deadline = time.monotonic() + 60
    effects = tmp_path / "effects.txt"
    while not ((tmp_path / "acked").exists() and effects.exists()):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "the answer was not acknowledged"
        time.sleep(0.02)
    proc.kill()
    proc.communicate(timeout=10)
    resumed = start(tmp_path, "resume")
    try:
        out, _ = resumed.communicate(timeout=60)
    finally:
        resumed.kill()  # no-op once it exited; a resume that hangs must not outlive the test
    assert resumed.returncode == 0, out
    assert json.loads((tmp_path / "result.txt").read_text()) == "hello ada"
    ran = [line.split("|")[:2] for line in effects.read_text().splitlines()]
    assert ran == [["answered", "ada"], ["answered", "ada"]]  # in flight at the kill: again


class Count(Event):
    """A number sent by the caller."""

    n: int


class Sums(Workflow):
    """Adds up the numbers the caller sends; stops at zero."""

    @step
    async def begin(self, ev: StartEvent) -> Count | None:
        """Nothing: the caller sends the numbers."""
        return None

    @step
    async def add(self, ctx: Context[Any], ev: Count) -> StopEvent | None:
        """Keep a running total; end it at zero."""
        total = await ctx.store.get("total", default=0) + ev.n
        await ctx.store.set("total", total)
        return StopEvent(result=total) if ev.n == 0 else None


class Opaque(Event):
    """An event whose field the JSON serializer cannot write."""

    thing: object


class Waits(Workflow):
    """Waits for any Opaque event."""

    @step
    async def wait(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        """Wait."""
        got = await ctx.wait_for_event(Opaque, InputRequiredEvent(), timeout=5)
        return StopEvent(result=str(got.thing))


@pytest.mark.asyncio
async def test_the_caller_s_events_are_recorded_and_routed_in_order(tmp_path: Path) -> None:
    """send_event awaited on a durable run returns once recorded; each event is routed once."""
    runtime = DBOSRuntime(f"sqlite:///{tmp_path / 'durable.sqlite'}")
    wf = Sums(runtime=runtime, timeout=30)
    await runtime.launch()
    try:
        handler = wf.run()
        for n in (1, 2, 3):
            await handler.send_event(Count(n=n))
        handler.ctx.send_event(Count(n=4))  # not awaited: recorded with the next batch
        await handler.send_event(Count(n=0))
        assert await handler == 10
    finally:
        await runtime.destroy()


@pytest.mark.asyncio
async def test_an_event_that_cannot_be_recorded_is_refused_naming_the_run(
    tmp_path: Path,
) -> None:
    """An event the serializer cannot write is refused when sent, before it is routed."""
    runtime = DBOSRuntime(f"sqlite:///{tmp_path / 'durable.sqlite'}")
    wf = Waits(runtime=runtime, timeout=30)
    await runtime.launch()
    try:
        handler = wf.run()
        async with asyncio.timeout(10):
            async for ev in handler.stream_events():
                if isinstance(ev, InputRequiredEvent):
                    break
        with pytest.raises(WorkflowRuntimeError, match=rf"durable run {handler.run_id} cannot"):
            await handler.send_event(Opaque(thing=object()))
        await handler.cancel_run()
    finally:
        await runtime.destroy()
