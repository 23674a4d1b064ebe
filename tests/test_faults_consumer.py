"""Consumer faults: callers that stop reading, never read, read elsewhere, or walk away.

The policy: the stream buffers every event until it is read; breaking out of
``stream_events()`` leaves the run going and a new ``stream_events()`` resumes; one task
iterates at a time; a dropped handler's run still completes; cancelling the task that
awaits the handler cancels the run. Spans are recorded (in memory) so that the OTel
context attach/detach of every step is exercised; the root logger is captured at
WARNING to catch asyncio's and OpenTelemetry's complaints.
"""

import asyncio
import gc
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from _helpers import Failing
from _helpers import run_span_name
from _helpers import sleep_unless_cancelled
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowCancelledEvent
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowHandler
from stepstream import WorkflowRuntimeError
from stepstream import step
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

#: Every test records its runs' telemetry and checks that nothing complained.
pytestmark = pytest.mark.usefixtures("tel", "complaints")

#: What asyncio and OpenTelemetry log when a task or a context is mishandled.
COMPLAINTS = (
    "Task was destroyed but it is pending",
    "Failed to detach context",
    "was never awaited",
    "exception was never retrieved",
    "Task exception was never retrieved",
)


@pytest.fixture
def complaints(caplog: pytest.LogCaptureFixture) -> Iterator[list[str]]:
    """Root-logger WARNING+ messages that are asyncio/OTel complaints; checked empty after."""
    gc.collect()  # what earlier tests left behind is theirs: collected before this one
    caplog.set_level(logging.WARNING)
    found: list[str] = []
    yield found
    gc.collect()
    # caplog.records holds only the current phase's records (teardown, here).
    records = [*caplog.get_records("call"), *caplog.records]
    found.extend(r.getMessage() for r in records if any(c in r.getMessage() for c in COMPLAINTS))
    assert found == []


class Tick(Event):
    n: int


class TickStart(StartEvent):
    n: int


class Ticker(Workflow):
    """Writes ``n`` Tick events, pausing ``pause`` seconds after each, then returns ``n``."""

    def __init__(self, pause: float = 0.0, **kwargs: Any) -> None:
        super().__init__(timeout=10, **kwargs)
        self.pause = pause
        self.finished = asyncio.Event()

    @step
    async def tick(self, ctx: Context[Any], ev: TickStart) -> StopEvent:
        for n in range(ev.n):
            ctx.write_event_to_stream(Tick(n=n))
            await asyncio.sleep(self.pause)
        self.finished.set()
        return StopEvent(result=ev.n)


class Gated(Workflow):
    """Writes Tick 0, waits for ``gate``, writes Tick 1, sets ``reached_end``, returns "done"."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.gate = asyncio.Event()
        self.reached_end = asyncio.Event()

    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Tick(n=0))
        await self.gate.wait()
        ctx.write_event_to_stream(Tick(n=1))
        self.reached_end.set()
        return StopEvent(result="done")


def ticks(events: list[Event]) -> list[int]:
    """The numbers of the Tick events among ``events``."""
    return [ev.n for ev in events if isinstance(ev, Tick)]


async def read(handler: WorkflowHandler, limit: int | None = None) -> list[Event]:
    """Read up to ``limit`` events (all when None), then stop iterating; bounded in time."""
    out: list[Event] = []
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            out.append(ev)
            if limit is not None and len(out) == limit:
                break
    return out


# -- breaking out, resuming ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_breaking_out_early_leaves_the_run_going_and_a_new_loop_resumes(
    tel: CapturedTelemetry,
) -> None:
    """After a break the run completes unread; the next stream_events() resumes at event 3."""
    wf = Ticker(pause=0.001)
    handler = wf.run(n=10)
    first = await read(handler, limit=3)
    assert ticks(first) == [0, 1, 2]
    async with asyncio.timeout(5):
        assert await handler == 10  # nobody reads while the run finishes
    assert handler.done()
    rest = await read(handler)
    assert ticks(rest) == list(range(3, 10))
    assert type(rest[-1]) is StopEvent
    with pytest.raises(WorkflowRuntimeError, match="already consumed up to its StopEvent"):
        handler.stream_events()
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


@pytest.mark.asyncio
async def test_breaking_out_repeatedly_loses_and_repeats_nothing() -> None:
    """Reading a live stream one event per loop, many loops, yields each event exactly once."""
    handler = Ticker(pause=0.002).run(n=20)
    seen: list[Event] = []
    while not seen or not isinstance(seen[-1], StopEvent):
        seen += await read(handler, limit=1)
    assert ticks(seen) == list(range(20))
    assert await handler == 20


@pytest.mark.asyncio
async def test_never_iterating_buffers_every_event() -> None:
    """A caller that only awaits the result gets it; every event stays readable afterwards."""
    handler = Ticker().run(n=50)
    async with asyncio.timeout(5):
        assert await handler == 50
    events = await read(handler)
    assert ticks(events) == list(range(50))
    assert type(events[-1]) is StopEvent


@pytest.mark.asyncio
async def test_never_iterating_nor_awaiting_a_failed_run_is_quiet(tel: CapturedTelemetry) -> None:
    """A failing run nobody reads or awaits logs no 'exception was never retrieved'."""
    handler = Failing(timeout=5).run()
    async with asyncio.timeout(5):
        while not handler.done():  # noqa: ASYNC110 - polling the public done()
            await asyncio.sleep(0.01)
    del handler
    gc.collect()
    await asyncio.sleep(0.05)
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


# -- other tasks ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_iterating_from_another_task() -> None:
    """A task other than the one that started the run can read the whole stream."""
    handler = Ticker(pause=0.001).run(n=10)
    reader = asyncio.create_task(read(handler))
    async with asyncio.timeout(5):
        assert await handler == 10
        events = await reader
    assert ticks(events) == list(range(10))


@pytest.mark.asyncio
async def test_sequential_iteration_from_two_tasks_splits_the_stream() -> None:
    """One task reads four events and stops; another task then reads the rest, no gap."""
    handler = Ticker(pause=0.001).run(n=10)
    async with asyncio.timeout(5):
        first = await asyncio.create_task(read(handler, limit=4))
        second = await asyncio.create_task(read(handler))
    assert ticks(first) + ticks(second) == list(range(10))
    assert await handler == 10


@pytest.mark.asyncio
async def test_a_second_concurrent_iterator_is_rejected() -> None:
    """While one task is parked in `async for`, another iterator raises; the first is unharmed."""
    wf = Gated()
    handler = wf.run()
    got_first = asyncio.Event()

    async def first_reader() -> list[Event]:
        out: list[Event] = []
        async for ev in handler.stream_events():
            out.append(ev)
            got_first.set()  # the loop then parks in __anext__ before this task yields
        return out

    first = asyncio.create_task(first_reader())
    async with asyncio.timeout(5):
        await got_first.wait()
    assert not first.done()
    with pytest.raises(WorkflowRuntimeError, match="already being iterated by another task"):
        async with asyncio.timeout(1):
            await anext(handler.stream_events())
    wf.gate.set()
    async with asyncio.timeout(5):
        events = await first
    assert ticks(events) == [0, 1]
    assert type(events[-1]) is StopEvent
    assert await handler == "done"


# -- dropping the handler ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_dropped_handler_run_still_completes_quietly(tel: CapturedTelemetry) -> None:
    """A run whose handler is dropped and garbage-collected mid-run still completes."""
    wf = Gated()
    handler = wf.run()
    await asyncio.sleep(0.02)
    del handler
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0.01)
    wf.gate.set()
    async with asyncio.timeout(5):
        await wf.reached_end.wait()
        while not tel.named(run_span_name("Gated")):  # noqa: ASYNC110 - the run span ends last
            await asyncio.sleep(0.01)
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


@pytest.mark.asyncio
async def test_dropped_handlers_of_many_runs_all_complete(tel: CapturedTelemetry) -> None:
    """Fifty runs started and forgotten at once all complete after garbage collection."""
    wf = Ticker(pause=0.01)
    for _ in range(50):
        wf.run(n=3)
    gc.collect()
    async with asyncio.timeout(5):
        while len(tel.named(run_span_name("Ticker"))) < 50:  # noqa: ASYNC110 - waiting for the runs to end
            await asyncio.sleep(0.01)
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


# -- cancelling the caller ---------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancelling_the_task_awaiting_the_handler_cancels_the_run(
    tel: CapturedTelemetry,
) -> None:
    """Cancelling the caller's task while it awaits the handler cancels the run's steps."""
    started = asyncio.Event()
    cancelled = asyncio.Event()

    class Long(Workflow):
        @step
        async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Tick(n=0))
            started.set()
            await sleep_unless_cancelled(60, cancelled)
            return StopEvent()

    handler = Long(timeout=120).run()

    async def caller() -> Any:
        return await handler

    task = asyncio.create_task(caller())
    async with asyncio.timeout(5):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        await cancelled.wait()
        events = await read(handler)
    assert ticks(events) == [0]
    terminal = events[-1]
    assert isinstance(terminal, WorkflowCancelledEvent)
    with pytest.raises(WorkflowCancelledError, match="the run's task was cancelled"):
        await handler
    assert handler.done()
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


@pytest.mark.asyncio
async def test_giving_up_on_a_shielded_handler_leaves_the_run_going() -> None:
    """A timed-out wait on asyncio.shield(handler) stops waiting, not the run (docs advice)."""
    wf = Ticker(pause=0.02)
    handler = wf.run(n=10)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(handler), 0.05)
    assert not handler.done()
    async with asyncio.timeout(5):
        assert await handler == 10
    assert wf.finished.is_set()
    assert ticks(await read(handler)) == list(range(10))


@pytest.mark.asyncio
async def test_cancelling_a_reader_task_leaves_the_run_going() -> None:
    """Cancelling a task parked in `async for` only stops that reader; the stream resumes."""
    handler = Ticker(pause=0.02).run(n=10)
    reader = asyncio.create_task(read(handler))
    await asyncio.sleep(0.05)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    async with asyncio.timeout(5):
        assert await handler == 10
    rest = await read(handler)
    assert type(rest[-1]) is StopEvent
    assert not isinstance(rest[-1], WorkflowFailedEvent)
    assert ticks(rest) == list(range(10 - len(ticks(rest)), 10))
