"""Soak: many runs in one process leak no memory, no task and no open span.

Sizes here are reduced for CI: 3,000 sequential runs and one burst of 1,000 concurrent
runs, each multiplied by the environment variable ``STEPSTREAM_SOAK_SCALE`` (default 1).
The full sizes of the reliability issue (100,000 sequential runs, 10,000 concurrent
runs) are manual commands::

    STEPSTREAM_SOAK_SCALE=34 .venv/bin/pytest tests/test_soak.py -k sequential -q
    STEPSTREAM_SOAK_SCALE=10 .venv/bin/pytest tests/test_soak.py -k concurrent -q

Each run goes through the whole runtime (fan-out, a collect_events join, streamed
events read by the caller; every seventh run fails in a step) with telemetry recording:
spans into an in-memory exporter (cleared periodically, so that it does not grow) and
a processor tracking open spans, metrics into an in-memory reader, log lines through a
structlog configuration that drops them. Memory is compared with tracemalloc between a
warm-up point and the end, both after ``gc.collect()``.
"""

import asyncio
import gc
import logging
import os
import tracemalloc
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog
from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import Span
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowHandler
from stepstream import step
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

SCALE = float(os.environ.get("STEPSTREAM_SOAK_SCALE", "1"))
SEQUENTIAL_RUNS = int(3_000 * SCALE)
CONCURRENT_RUNS = int(1_000 * SCALE)
#: Allowed growth of traced memory between the warm-up point and the end.
MEMORY_BOUND_BYTES = 256 * 1024
#: Clear the in-memory span exporter after this many runs.
CLEAR_EVERY = 250


class OpenSpans(SpanProcessor):
    """Tracks spans started but not yet ended, in memory proportional to the open ones."""

    def __init__(self) -> None:
        self.open: set[int] = set()
        self.started = 0
        self.ended = 0
        self.problems: list[str] = []

    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        """Remember an open span."""
        self.started += 1
        self.open.add(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        """Forget an ended span; an unknown one is a problem (ended twice or never started)."""
        self.ended += 1
        assert span.context is not None
        if span.context.span_id not in self.open:
            self.problems.append(f"span {span.name} ended but not open")
        self.open.discard(span.context.span_id)
        if not self.open:
            self.open = set()  # a set never shrinks: start afresh, or it looks like a leak


class Telemetry:
    """Spans through the open-span tracker into an exporter the test clears; metrics in memory.

    CapturedTelemetry keeps a count for every span ever started, which grows with the
    runs: the soak tracks open spans only, so that its memory stays flat.
    """

    def __init__(self, metrics: CapturedTelemetry) -> None:
        self.spans = OpenSpans()
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(self.spans)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.metrics = metrics

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments that make a Workflow record into these providers."""
        return {
            "tracer_provider": self.tracer_provider,
            "meter_provider": self.metrics.meter_provider,
        }


def drop_line(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Structlog processor that discards every line (the logging path runs, nothing kept)."""
    raise structlog.DropEvent


@pytest.fixture
def telemetry(sdk: CapturedTelemetry, caplog: pytest.LogCaptureFixture) -> Iterator[Telemetry]:
    """Recording telemetry and a line-dropping structlog configuration, reset afterwards."""
    caplog.set_level(logging.WARNING)
    was_configured = structlog.is_configured()
    previous = structlog.get_config()
    structlog.configure(processors=[drop_line])
    tel = Telemetry(sdk)
    try:
        yield tel
    finally:
        tel.tracer_provider.shutdown()
        if was_configured:
            structlog.configure(**previous)
        else:
            structlog.reset_defaults()
    assert [r.getMessage() for r in caplog.get_records("call")] == []


class Part(Event):
    side: str


class Written(Event):
    n: int


class SoakStart(StartEvent):
    n: int


class Soak(Workflow):
    """Fan out to two steps that write to the stream, then join them; every 7th run fails."""

    @step
    async def start(self, ctx: Context[Any], ev: SoakStart) -> Part | None:
        await ctx.store.set("n", ev.n)
        ctx.write_event_to_stream(Written(n=ev.n))
        ctx.send_event(Part(side="left"))
        ctx.send_event(Part(side="right"))
        return None

    @step(num_workers=2)
    async def side(self, ctx: Context[Any], ev: Part) -> Written:
        await asyncio.sleep(0)
        ctx.write_event_to_stream(Written(n=len(ev.side)))
        return Written(n=1)

    @step
    async def join(self, ctx: Context[Any], ev: Written) -> StopEvent | None:
        joined = ctx.collect_events(ev, [Written, Written])
        if joined is None:
            return None
        n = await ctx.store.get("n")
        if n % 7 == 0:
            msg = f"run {n} fails on purpose"
            raise ValueError(msg)
        return StopEvent(result=sum(e.n for e in joined if isinstance(e, Written)))


async def one_run(wf: Workflow, n: int) -> None:
    """Run once, reading the stream; check the outcome against the run's number."""
    handler: WorkflowHandler = wf.run(n=n)
    streamed = [ev async for ev in handler.stream_events()]
    assert len(streamed) == 4, streamed  # three Written, then the terminal event
    if n % 7 == 0:
        assert isinstance(streamed[-1], WorkflowFailedEvent)
        with pytest.raises(ValueError, match="fails on purpose"):
            await handler
    else:
        assert type(streamed[-1]) is StopEvent
        assert await handler == 2


async def settle() -> None:
    """Let the loop finish what the last runs left for their next iterations."""
    for _ in range(10):
        await asyncio.sleep(0)


def traced_now() -> int:
    """Bytes traced by tracemalloc after a full garbage collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def check_clean(tel: Telemetry) -> None:
    """No task but this one, no open span, no run active."""
    # A run's task ends a moment after its outcome is published (await handler returns).
    async with asyncio.timeout(1):
        while asyncio.all_tasks() != {asyncio.current_task()}:  # noqa: ASYNC110
            await asyncio.sleep(0)
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert tel.spans.problems == []
    assert tel.spans.open == set()
    assert tel.spans.started == tel.spans.ended > 0
    assert tel.metrics.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0


async def growth_over(
    telemetry: Telemetry,
    warm_up: Callable[[], Awaitable[None]],
    work: Callable[[], Awaitable[None]],
) -> int:
    """Bytes of traced memory ``work`` adds after ``warm_up``; then check nothing is left."""
    tracemalloc.start(1)
    try:
        await warm_up()
        await settle()
        telemetry.exporter.clear()
        baseline = traced_now()
        await work()
        await settle()
        telemetry.exporter.clear()
        growth = traced_now() - baseline
    finally:
        tracemalloc.stop()
    await check_clean(telemetry)
    return growth


@pytest.mark.asyncio
async def test_sequential_runs_leak_nothing(telemetry: Telemetry) -> None:
    """Thousands of sequential runs: bounded memory, no leftover task, every span ended."""
    wf = Soak(timeout=30, **telemetry.kwargs())
    warmup = 300

    async def warm_up() -> None:
        for n in range(1, warmup + 1):
            await one_run(wf, n)

    async def work() -> None:
        for n in range(warmup + 1, SEQUENTIAL_RUNS + 1):
            await one_run(wf, n)
            if n % CLEAR_EVERY == 0:
                telemetry.exporter.clear()

    growth = await growth_over(telemetry, warm_up, work)
    per_run = growth / max(1, SEQUENTIAL_RUNS - warmup)
    assert growth < MEMORY_BOUND_BYTES, f"grew {growth} bytes ({per_run:.1f} per run)"


@pytest.mark.asyncio
async def test_concurrent_runs_leak_nothing(telemetry: Telemetry) -> None:
    """A burst of a thousand concurrent runs: bounded memory, no task left, spans ended."""
    wf = Soak(timeout=60, **telemetry.kwargs())

    async def burst() -> None:
        await asyncio.gather(*(one_run(wf, n) for n in range(1, CONCURRENT_RUNS + 1)))

    async def bounded_burst() -> None:
        async with asyncio.timeout(120 * SCALE):
            await burst()

    # Warm-up: a burst of the same size, so that the caches exist and the loop's
    # task set (which never shrinks) has reached its size.
    growth = await growth_over(telemetry, burst, bounded_burst)
    assert growth < MEMORY_BOUND_BYTES, f"grew {growth} bytes after {CONCURRENT_RUNS} runs"
