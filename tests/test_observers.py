"""Observers through the public API: telemetry.observe(), capture_telemetry(), the ending phase."""

import asyncio
from typing import Any

import pytest

from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowRuntimeError
from stepstream import step
from stepstream.telemetry import Observer
from stepstream.telemetry import RunInfo
from stepstream.telemetry import Status
from stepstream.telemetry import StepInfo
from stepstream.telemetry import attributes
from stepstream.telemetry import observe
from stepstream.testing import CapturedTelemetry
from stepstream.testing import capture_telemetry


class Note(Event):
    text: str


class Pong(Event):
    pass


class Noting(Workflow):
    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(text="hello"))
        return StopEvent(result="done")


class Recorder(Observer):
    """Writes down every lifecycle call it receives."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.trace_ids: list[str | None] = []

    def run_started(self, run: RunInfo) -> None:
        self.calls.append("run_started")

    def step_started(self, inv: StepInfo) -> None:
        self.calls.append(f"step_started {inv.step}")

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        self.calls.append(f"step_finished {inv.step}")

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        self.calls.append(f"event_streamed {type(event).__name__} {seq}")

    def run_finished(  # noqa: PLR0917 - the seam's signature
        self,
        run: RunInfo,
        status: Status,
        error: BaseException | None,
        terminal: StopEvent,
        seq: int,
        source: StepInfo | None,
    ) -> None:
        self.calls.append(f"run_finished {status}")
        self.trace_ids.append(run.trace_id)


class Broken(Observer):
    """Raises from every call it receives."""

    def run_started(self, run: RunInfo) -> None:
        raise ValueError(run.run_id)

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        raise ValueError(seq)


EXPECTED_CALLS = [
    "run_started",
    "step_started start",
    "event_streamed Note 0",
    "step_finished start",
    "run_finished ok",
]


@pytest.mark.asyncio
async def test_observe_adds_an_observer_to_runs_started_in_the_block() -> None:
    """An observer added with observe() sees the lifecycle of a run started inside the block."""
    recorder = Recorder()
    with observe(recorder):
        handler = Noting().run()
    assert await handler == "done"
    assert recorder.calls == EXPECTED_CALLS


@pytest.mark.asyncio
async def test_successive_blocks_reach_their_own_observers() -> None:
    """Runs of one workflow started in successive observe() blocks each reach the
    observers of their own block: the same observer again, or a different one."""
    workflow = Noting()
    same, other = Recorder(), Recorder()
    for recorder in (same, same, other, same):
        with observe(recorder):
            handler = workflow.run()
        assert await handler == "done"
    assert same.calls == EXPECTED_CALLS * 3
    assert other.calls == EXPECTED_CALLS


@pytest.mark.asyncio
async def test_observe_does_not_reach_runs_started_outside_the_block() -> None:
    """A run started after the block (or in another task's context) is not observed."""
    recorder = Recorder()
    with observe(recorder):
        pass
    await Noting().run()

    async def elsewhere() -> None:
        await Noting().run()

    task = asyncio.create_task(elsewhere())
    with observe(recorder):
        await task  # the task's context was copied before the block
    assert recorder.calls == []


@pytest.mark.asyncio
async def test_a_raising_observer_never_breaks_the_run_or_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A raising observer is reported once per method; the run and the other observers go on."""
    recorder = Recorder()
    with observe(Broken(), recorder):
        handler = Noting().run()
    assert await handler == "done"
    assert recorder.calls == EXPECTED_CALLS
    reported = [r.getMessage() for r in caplog.records if "Broken" in r.getMessage()]
    assert reported == [
        "stepstream: Broken.run_started failed; later failures are not logged",
        "stepstream: Broken.event_streamed failed; later failures are not logged",
    ]


@pytest.mark.asyncio
async def test_trace_id_is_on_the_run_for_other_observers_once_traced(
    tel: CapturedTelemetry,
) -> None:
    """A run recorded by a tracing observer carries its 32-hex trace id to the others."""
    recorder = Recorder()
    with observe(recorder):
        await Noting().run()
    run_span = tel.one(f"{attributes.RUN_SPAN_PREFIX} Noting")
    assert run_span.context is not None
    assert recorder.trace_ids == [format(run_span.context.trace_id, "032x")]


@pytest.mark.asyncio
async def test_untraced_run_has_no_trace_id() -> None:
    """With nothing tracing the run, observers see trace_id None."""
    recorder = Recorder()
    with observe(recorder):
        await Noting().run()
    assert recorder.trace_ids == [None]


@pytest.mark.asyncio
async def test_two_captures_record_the_same_run_independently() -> None:
    """Nested capture_telemetry() blocks each get the whole run: spans, lines and metrics."""
    with capture_telemetry() as outer, capture_telemetry() as inner:
        await Noting().run()
    for tel in (outer, inner):
        assert sorted(s.name for s in tel.spans) == ["invoke_workflow Noting", "run_step start"]
        assert [line["event_type"] for line in tel.lines("stream_event")] == ["Note", "StopEvent"]
        assert tel.metric_sum(attributes.METRIC_RUNS_ACTIVE) == 0
        assert tel.all_spans_ended_once()
    assert outer.spans[0].context is not None
    assert inner.spans[0].context is not None
    assert outer.spans[0].context.span_id != inner.spans[0].context.span_id


@pytest.mark.asyncio
async def test_capture_records_a_run_to_its_end_after_the_block() -> None:
    """A run started inside the block and finished after it is recorded completely."""
    release = asyncio.Event()

    class Slow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            await release.wait()
            return StopEvent(result=1)

    with capture_telemetry() as tel:
        handler = Slow().run()
    release.set()
    assert await handler == 1
    assert [line["event"] for line in tel.logs] == [
        "run_started",
        "step_started",
        "step_finished",
        "stream_event",
        "run_finished",
    ]
    assert tel.one("invoke_workflow Slow").attributes == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "Slow",
        "stepstream.workflow": "Slow",
        "stepstream.run_id": handler.run_id,
        "stepstream.run.status": "ok",
    }


# -- the ending phase: one answer from the moment the outcome is decided ------------------


class Stubborn(Workflow):
    """``finish`` ends the run while ``linger`` takes 0.3 s to honour its cancellation."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.lingering = asyncio.Event()
        self.during_grace: list[str] = []

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Note | Pong:
        ctx.send_event(Pong())
        return Note(text="go")

    @step
    async def linger(self, ctx: Context[Any], ev: Pong) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.lingering.set()
            await asyncio.sleep(0.3)  # ignores the cancellation for a while: the grace period
            ctx.write_event_to_stream(Note(text="from the grace period"))
            raise

    @step
    async def finish(self, ev: Note) -> StopEvent:
        await asyncio.sleep(0.01)
        return StopEvent(result="finished")


@pytest.mark.asyncio
async def test_send_event_is_refused_during_the_grace_period_as_after_the_end() -> None:
    """While cancelled steps wind down, send_event raises the same error as after the end."""
    wf = Stubborn()
    handler = wf.run()
    async with asyncio.timeout(5):
        await wf.lingering.wait()
    assert not handler.done()
    with pytest.raises(WorkflowRuntimeError) as during:
        handler.ctx.send_event(Pong())
    assert await handler == "finished"
    with pytest.raises(WorkflowRuntimeError) as after:
        handler.ctx.send_event(Pong())
    expected = (
        f"send_event(Pong): run {handler.run_id} of workflow Stubborn has ended, so nothing "
        "can receive it; check handler.done() before sending"
    )
    assert str(during.value) == str(after.value) == expected


@pytest.mark.asyncio
async def test_writes_during_the_grace_period_do_not_reach_the_stream(
    tel: CapturedTelemetry,
) -> None:
    """A step writing to the stream while being cancelled writes into the void."""
    handler = Stubborn().run()
    events = [ev async for ev in handler.stream_events()]
    assert [type(ev).__name__ for ev in events] == ["StopEvent"]
    assert [line["event_type"] for line in tel.lines("stream_event")] == ["StopEvent"]
