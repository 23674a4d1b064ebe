"""A finished run is freed by reference counting, not left for the garbage collector.

A run, its context, its step invocations and their spans used to form reference cycles;
each run then stayed in memory until a collection found it, and every collection had
more to traverse (over half of a busy service's GC work). These tests count what the
collector finds after runs with automatic collection switched off.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator

import pytest

from _helpers import MyWorkflow
from _helpers import drain
from _helpers import providers_of
from stepstream import Event
from stepstream import StopEvent
from stepstream import Workflow
from stepstream.handler import WorkflowHandler
from stepstream.telemetry import Observer
from stepstream.telemetry import StepInfo
from stepstream.telemetry import observe
from stepstream.testing import CapturedTelemetry

RUNS = 20


@pytest.fixture
def no_automatic_gc() -> Iterator[None]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _garbage_after(
    make: Callable[[], Workflow], body: Callable[[Workflow], Awaitable[None]]
) -> int:
    """Objects the collector frees after RUNS runs (a warm-up run first)."""

    async def main() -> int:
        wf = make()
        await body(wf)  # warm-up: first-use caches are not garbage
        gc.collect()
        for _ in range(RUNS):
            await body(wf)
        await asyncio.sleep(0)
        return gc.collect()

    return asyncio.run(main())


async def _stream_and_await(wf: Workflow) -> None:
    await _finish(wf.run())


async def _finish(handler: WorkflowHandler) -> None:
    events = await drain(handler)
    assert len(events) > 3
    assert isinstance(events[-1], StopEvent)
    assert await handler == "Workflow complete."
    assert handler.ctx.store is not None  # the caller keeps the context after the end


@pytest.mark.usefixtures("no_automatic_gc")
def test_unobserved_runs_leave_no_cycles() -> None:
    """Without telemetry, finished runs leave (almost) nothing for the collector."""
    garbage = _garbage_after(lambda: MyWorkflow(timeout=5), _stream_and_await)
    assert garbage < RUNS, f"{garbage} objects in reference cycles after {RUNS} runs"


@pytest.mark.usefixtures("no_automatic_gc")
def test_traced_runs_leave_no_cycles(sdk: CapturedTelemetry) -> None:
    """With spans, span events and metrics recorded, finished runs leave no cycles either."""
    garbage = _garbage_after(lambda: MyWorkflow(timeout=5, **providers_of(sdk)), _stream_and_await)
    assert len(sdk.spans) == 4 * (RUNS + 1)
    assert garbage < RUNS, f"{garbage} objects in reference cycles after {RUNS} runs"


class _StepCounter(Observer):
    """A per-run observer, as the server adds one to each run it starts."""

    def __init__(self) -> None:
        self.steps = 0

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        self.steps += 1


@pytest.mark.usefixtures("no_automatic_gc")
def test_runs_with_their_own_observer_leave_no_cycles(sdk: CapturedTelemetry) -> None:
    """A run started inside observe(...) with an observer of its own leaves no cycles:
    the fan-out made for that run is freed with it."""
    counters: list[_StepCounter] = []

    async def observed(wf: Workflow) -> None:
        counters.append(_StepCounter())
        with observe(counters[-1]):
            handler = wf.run()
        await _finish(handler)

    garbage = _garbage_after(lambda: MyWorkflow(timeout=5, **providers_of(sdk)), observed)
    assert all(c.steps > 0 for c in counters)
    assert garbage < RUNS, f"{garbage} objects in reference cycles after {RUNS} runs"
