"""Durable runs that only wait for events are released (parked) and reloaded by an event.

In one process; tests/test_durable_server.py parks and reloads runs of a server process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.errors import WorkflowValidationError
from stepstream.events import Event
from stepstream.events import HumanResponseEvent
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.testing import CapturedTelemetry
from stepstream.testing import capture_telemetry

pytest.importorskip("dbos")

from stepstream.durable import DBOSRuntime


class Note(Event):
    """Streamed by the asking step after the answer."""

    text: str


class Asks(Workflow):
    """Asks for a name (after keeping a count in its store), streams a note, greets."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        """Count, ask, wait, note, greet."""
        await ctx.store.set("asked", await ctx.store.get("asked", default=0) + 1)
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        ctx.write_event_to_stream(Note(text=f"got {answer.get('response')}"))
        return StopEvent(result=f"hello {answer.get('response')}")


@asynccontextmanager
async def parking(
    tmp_path: Path, after: float | None = 0.2
) -> AsyncIterator[tuple[DBOSRuntime, Asks, CapturedTelemetry]]:
    """A runtime releasing runs idle for ``after`` s, an Asks on it, and their telemetry."""
    runtime = DBOSRuntime(f"sqlite:///{tmp_path / 'durable.sqlite'}", idle_release_after=after)
    wf = Asks(runtime=runtime, timeout=None)
    with capture_telemetry() as tel:
        await runtime.launch()
        try:
            yield runtime, wf, tel
        finally:
            await runtime.destroy()


async def asked(handler: WorkflowHandler) -> list[Any]:
    """The handler's stream up to its question (its type names)."""
    seen = []
    async with asyncio.timeout(10):
        async for ev in handler.stream_events():
            seen.append(type(ev).__name__)
            if isinstance(ev, InputRequiredEvent):
                return seen
    return seen


async def until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    """Wait for ``check()`` to hold."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def parked(tel: CapturedTelemetry) -> float:
    """The stepstream.runs.parked gauge."""
    return (
        tel.metric_sum("stepstream.runs.parked") if "stepstream.runs.parked" in tel.metrics() else 0
    )


def alive(cls: type[Any], run_id: str) -> list[Any]:
    """Objects of ``cls`` (or a subclass) belonging to run ``run_id`` that are still alive."""
    gc.collect()
    found = []
    for obj in gc.get_objects():
        if isinstance(obj, cls):
            info = getattr(obj, "info", None) or getattr(getattr(obj, "_run", None), "info", None)
            if info is not None and info.run_id == run_id:
                found.append(obj)
    return found


@pytest.mark.asyncio
async def test_an_idle_run_is_released_freed_and_reloaded_by_its_answer(tmp_path: Path) -> None:
    """Released after idle_release_after: no Run or Context of it is left; re-attaching
    reloads it, the answer ends it, its state and stream go on from before."""
    async with parking(tmp_path) as (runtime, wf, tel):
        handler = wf.run()
        run_id = handler.run_id
        run_type = type(handler._run)
        assert await asked(handler) == ["InputRequiredEvent"]
        assert alive(run_type, run_id)
        assert alive(Context, run_id)
        del handler
        await until(lambda: parked(tel) == 1, "the release")
        # The release is counted as the run's task unwinds: its objects go right after.
        await until(
            lambda: alive(run_type, run_id) == [] and alive(Context, run_id) == [],
            "no Run or Context of the released run left",
            timeout=5,
        )
        (released,) = list(tel.named("invoke_workflow Asks"))
        assert released.attributes is not None
        assert released.attributes["stepstream.run.parked"] is True
        assert [line["run_id"] for line in tel.lines("run_parked")] == [run_id]

        again = await runtime.handler(run_id)
        assert parked(tel) == 0
        reading = asyncio.create_task(drained(again, after=-1))
        await again.send_event(HumanResponseEvent(response="ada"))
        assert await again == "hello ada"
        assert await reading == ["InputRequiredEvent", "Note", "StopEvent"]
        assert await again.ctx.store.get("asked") == 2  # the step ran again, to its wait
        first, second = tel.named("invoke_workflow Asks")
        assert second.attributes is not None
        assert second.attributes["stepstream.run.resumed"] is True
        assert second.attributes["stepstream.run.attempt"] == 2
        assert first.context is not None
        assert second.context is not None
        assert second.context.trace_id == first.context.trace_id


async def drained(handler: WorkflowHandler, after: int | None = None) -> list[str]:
    """The type names of the handler's events (after ``after``), through the terminal one."""
    async with asyncio.timeout(20):
        events = handler.stream_events() if after is None else handler.stream_events(after=after)
        return [type(ev).__name__ async for ev in events]


@pytest.mark.asyncio
async def test_a_handler_held_across_the_release_follows_the_reloaded_run(tmp_path: Path) -> None:
    """The caller keeps its handler: its answer reloads the run, its stream goes on, and
    await returns the result."""
    async with parking(tmp_path) as (_, wf, tel):
        handler = wf.run()
        assert await asked(handler) == ["InputRequiredEvent"]
        await until(lambda: parked(tel) == 1, "the release")
        assert not handler.done()
        reading = asyncio.create_task(drained(handler))
        replay = asyncio.create_task(drained(handler, after=0))
        await handler.send_event(HumanResponseEvent(response="bo"))
        assert await handler == "hello bo"
        assert await reading == ["Note", "StopEvent"]
        assert await replay == ["Note", "StopEvent"]
        assert handler.done()


@pytest.mark.asyncio
async def test_release_idle_parks_waiting_runs_now_and_send_event_reloads_one(
    tmp_path: Path,
) -> None:
    """runtime.release_idle() parks the runs that only wait (idle release off); an event
    sent by run id, as from any process, reloads the run; the held handler follows it."""
    async with parking(tmp_path, after=None) as (runtime, wf, tel):
        handlers = [wf.run() for _ in range(3)]
        for handler in handlers:
            await asyncio.wait_for(asked(handler), 10)
        assert await runtime.release_idle() == 3
        assert parked(tel) == 3
        assert [r.state for r in await runtime.runs([h.run_id for h in handlers])] == ["parked"] * 3
        await runtime.send_event(handlers[0].run_id, HumanResponseEvent(response="di"))
        assert await asyncio.wait_for(handlers[0], 20) == "hello di"
        assert parked(tel) == 2
        ended = await runtime.run(handlers[0].run_id)
        assert ended is not None
        assert ended.state in {"ok", "running"}  # DBOS records the end a moment later
        assert await runtime.release_idle() == 0  # the others are parked already


@pytest.mark.asyncio
async def test_cancelling_a_parked_run_through_its_handler_ends_it_for_good(
    tmp_path: Path,
) -> None:
    """cancel_run() on a handler held across the release reloads the run and cancels it."""
    async with parking(tmp_path) as (runtime, wf, tel):
        handler = wf.run()
        await asked(handler)
        await until(lambda: parked(tel) == 1, "the release")
        await handler.cancel_run(timeout=20)
        assert handler.cancelled()
        ended = await runtime.run(handler.run_id)
        assert ended is not None
        assert ended.state in {"cancelled", "running"}  # DBOS records the end a moment later


@pytest.mark.asyncio
async def test_an_answer_within_the_idle_time_keeps_the_run(tmp_path: Path) -> None:
    """A run answered before idle_release_after is never released."""
    async with parking(tmp_path, after=30) as (_, wf, tel):
        handler = wf.run()
        await asked(handler)
        await handler.send_event(HumanResponseEvent(response="cy"))
        assert await handler == "hello cy"
        assert tel.lines("run_parked") == []


@pytest.mark.asyncio
async def test_step_spans_of_durable_and_parked_runs_end_without_context_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A durable step's span ends once its completion is recorded, from the journal's
    task, and a parked step's when the run is released: OpenTelemetry logs no failure to
    detach the step's context (the step's own task set it)."""
    caplog.set_level(logging.ERROR)
    async with parking(tmp_path) as (_, wf, tel):
        handler = wf.run()
        await asked(handler)
        await until(lambda: parked(tel) == 1, "the release")
        await handler.send_event(HumanResponseEvent(response="ed"))
        assert await asyncio.wait_for(handler, 20) == "hello ed"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert tel.all_spans_ended_once()


@pytest.mark.parametrize(
    "value",
    [pytest.param(0, id="zero"), pytest.param(-1.5, id="negative"), pytest.param("60", id="text")],
)
def test_idle_release_after_must_be_positive_seconds_or_none(value: object) -> None:
    """A bad idle_release_after is refused, naming it and what it takes."""
    with pytest.raises(WorkflowValidationError, match=r"idle_release_after=.*positive number"):
        DBOSRuntime("sqlite:///unused.sqlite", idle_release_after=value)  # type: ignore[arg-type]


class AsksThenAnswers(Workflow):
    """The two-step form: one step asks (and ends), another takes the answer."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> InputRequiredEvent:
        """Count, then ask."""
        await ctx.store.set("asked", await ctx.store.get("asked", default=0) + 1)
        return InputRequiredEvent(prefix="name?")

    @step
    async def answer(self, ctx: Context[Any], ev: HumanResponseEvent) -> StopEvent:
        """Greet."""
        return StopEvent(result=f"hi {ev.get('response')} ({await ctx.store.get('asked')})")


@pytest.mark.asyncio
async def test_a_run_that_asks_in_one_step_and_answers_in_another_is_released_too(
    tmp_path: Path,
) -> None:
    """No step is in flight while it waits: it is released after idle_release_after, and
    the answer reloads it (the asking step does not run again) and ends it."""
    async with parking(tmp_path) as (runtime, _, tel):
        wf = AsksThenAnswers(runtime=runtime, timeout=None)
        handler = wf.run()
        run_id = handler.run_id
        run_type = type(handler._run)
        assert await asked(handler) == ["InputRequiredEvent"]
        del handler
        await until(lambda: parked(tel) == 1, "the release")
        await until(lambda: alive(run_type, run_id) == [], "no Run of it left", timeout=5)
        await runtime.send_event(run_id, HumanResponseEvent(response="flo"))
        again = await runtime.handler(run_id)
        assert await asyncio.wait_for(again, 20) == "hi flo (1)"
        assert await drained(again, after=-1) == ["InputRequiredEvent", "StopEvent"]
        assert [line["run_id"] for line in tel.lines("run_parked")] == [run_id]


@pytest.mark.asyncio
async def test_release_idle_takes_a_run_with_nothing_in_flight(tmp_path: Path) -> None:
    """runtime.release_idle() releases the two-step form waiting for its answer."""
    async with parking(tmp_path, after=None) as (runtime, _, tel):
        wf = AsksThenAnswers(runtime=runtime, timeout=None)
        handler = wf.run()
        await asked(handler)
        assert await runtime.release_idle() == 1
        assert parked(tel) == 1
        await handler.send_event(HumanResponseEvent(response="gus"))
        assert await asyncio.wait_for(handler, 20) == "hi gus (1)"


@pytest.mark.asyncio
async def test_a_burst_of_runs_leaves_a_bounded_thread_pool(tmp_path: Path) -> None:
    """DBOS's thread pool is bounded (64 threads): 300 runs started at once, all parked,
    leave at most that many threads behind, not one per run."""
    async with parking(tmp_path, after=None) as (runtime, wf, _):
        handlers = [wf.run() for _ in range(300)]
        async with asyncio.timeout(120):
            await asyncio.gather(*(asked(h) for h in handlers))
        assert await runtime.release_idle() == 300
        pool = [t for t in threading.enumerate() if t.name.startswith("dbos-executor")]
        assert 0 < len(pool) <= 64
