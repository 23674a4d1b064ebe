"""Tracing: run and step spans, links, span events per streamed event, context propagation."""

import asyncio
import json
import threading
import time
from collections.abc import Awaitable
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode
from opentelemetry.trace import Tracer

from _helpers import SEED_STEPS
from _helpers import Big
from _helpers import BigWriter
from _helpers import Failing
from _helpers import FanOutJobs
from _helpers import Flaky
from _helpers import Job
from _helpers import JobDone
from _helpers import MyWorkflow
from _helpers import ProgressEvent
from _helpers import Slow
from _helpers import StepTimeout
from _helpers import Task
from _helpers import answer_prompts
from _helpers import attr
from _helpers import cancel_after
from _helpers import drain
from _helpers import expected_stream
from _helpers import failure_of
from _helpers import outcome
from _helpers import parent_id
from _helpers import recorded_stream
from _helpers import run_seed
from _helpers import run_span_name
from _helpers import span_id
from _helpers import step_span_name
from _helpers import stream_span_events
from _helpers import trace_id
from stepstream import Context
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowHandler
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

# -- events and workflows ---------------------------------------------------------------


class TracedStart(StartEvent):
    """Carries the test's tracer (from the captured telemetry's provider) into a step."""

    tracer: Tracer


class NestedStart(StartEvent):
    inner: Workflow


class FanOut(FanOutJobs):
    """Sends three Jobs; three workers each return a JobDone; a join collects them."""

    @step(num_workers=3)
    async def worker(self, ctx: Context[Any], ev: Job) -> JobDone:
        await asyncio.sleep(0.02)
        return JobDone(i=ev.i)


class Asker(Workflow):
    """Waits in wait_for_event for the caller's HumanResponseEvent."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="?"), timeout=2
        )
        return StopEvent(result=answer["response"])


class Racing(Workflow):
    """A fast step ends the run while its slow sibling is still in flight."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Job | Task | None:
        ctx.send_event(Job(i=0))
        ctx.send_event(Task())
        return None

    @step
    async def slow(self, ctx: Context[Any], ev: Job) -> StopEvent:
        await asyncio.sleep(10)
        return StopEvent(result="slow")

    @step
    async def fast(self, ctx: Context[Any], ev: Task) -> StopEvent:
        await asyncio.sleep(0.01)
        return StopEvent(result="fast")


BLOCKER = threading.Event()


class BlockingSync(Workflow):
    """A plain-def step blocks its worker thread until released (or 2 s pass)."""

    @step
    def block(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        BLOCKER.wait(2)
        return StopEvent(result="released")


class Timed(Workflow):
    """Writes five events, noting the wall clock just before and after each write."""

    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        marks: list[tuple[int, int]] = []
        for i in range(5):
            before = time.time_ns()
            ctx.write_event_to_stream(ProgressEvent(msg=str(i)))
            marks.append((before, time.time_ns()))
            await asyncio.sleep(0.002)
        return StopEvent(result=marks)


class AsyncUserSpan(Workflow):
    """An async step opens a user span."""

    @step
    async def work(self, ctx: Context[Any], ev: TracedStart) -> StopEvent:
        with ev.tracer.start_as_current_span("user work") as span:
            span.set_attribute("user.thread", threading.get_ident())
        return StopEvent(result="ok")


class SyncUserSpan(Workflow):
    """A plain-def step (run in a worker thread) opens a user span."""

    @step
    def work(self, ctx: Context[Any], ev: TracedStart) -> StopEvent:
        with ev.tracer.start_as_current_span("user work") as span:
            span.set_attribute("user.thread", threading.get_ident())
        return StopEvent(result="ok")


class TaskUserSpan(Workflow):
    """An async step starts an asyncio task that opens a user span."""

    @step
    async def work(self, ctx: Context[Any], ev: TracedStart) -> StopEvent:
        async def child() -> None:
            await asyncio.sleep(0)
            with ev.tracer.start_as_current_span("user work") as span:
                span.set_attribute("user.thread", threading.get_ident())

        task = asyncio.create_task(child())
        await task
        return StopEvent(result="ok")


class Inner(Workflow):
    """Run from inside another workflow's step."""

    @step
    async def inner_step(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        return StopEvent(result="inner")


class Outer(Workflow):
    """Its step runs another workflow and returns that run's result."""

    @step
    async def outer_step(self, ctx: Context[Any], ev: NestedStart) -> StopEvent:
        return StopEvent(result=await ev.inner.run())


# -- helpers ----------------------------------------------------------------------------


def seed_step_spans(tel: CapturedTelemetry) -> list[ReadableSpan]:
    """The seed run's three step spans, in step order."""
    return [tel.one(step_span_name(name)) for name in SEED_STEPS]


def exception_events(span: ReadableSpan) -> list[dict[str, Any]]:
    """Attributes of the ``exception`` span events recorded on ``span``."""
    return [dict(ev.attributes or {}) for ev in span.events if ev.name == "exception"]


# -- the run span -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_seed_run_gives_one_run_span_and_three_step_spans(tel: CapturedTelemetry) -> None:
    """The seed workflow records exactly one run span and one span per step."""
    await run_seed()
    assert sorted(s.name for s in tel.spans) == sorted(
        [
            "invoke_workflow MyWorkflow",
            "run_step step_one",
            "run_step step_two",
            "run_step step_three",
        ]
    )
    assert run_span_name("MyWorkflow") == "invoke_workflow MyWorkflow"
    assert step_span_name("step_one") == "run_step step_one"


@pytest.mark.asyncio
async def test_run_span_carries_the_contract_attributes(tel: CapturedTelemetry) -> None:
    """The run span is INTERNAL, names the operation, workflow and run id, and ends ok."""
    run_id, _ = await run_seed()
    run = tel.one(run_span_name("MyWorkflow"))
    assert run.kind is SpanKind.INTERNAL
    assert attr(run, "gen_ai.operation.name") == "invoke_workflow"
    assert attr(run, attrs.GEN_AI_OPERATION_NAME) == attrs.GEN_AI_OPERATION_INVOKE_WORKFLOW
    assert attr(run, "gen_ai.workflow.name") == "MyWorkflow"
    assert attr(run, attrs.GEN_AI_WORKFLOW_NAME) == "MyWorkflow"
    assert attr(run, "stepstream.workflow") == "MyWorkflow"
    assert attr(run, "stepstream.run_id") == run_id
    assert attr(run, attrs.RUN_ID) == run_id
    assert attr(run, "stepstream.run.status") == "ok"
    assert attr(run, attrs.RUN_STATUS) == attrs.STATUS_OK
    assert run.status.status_code is not StatusCode.ERROR
    assert exception_events(run) == []
    assert parent_id(run) is None


@pytest.mark.asyncio
async def test_run_span_parent_is_the_callers_current_span(tel: CapturedTelemetry) -> None:
    """run() inside a caller's span makes the run span its child, even if awaited later."""
    tracer = tel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller request") as caller:
        handler = MyWorkflow(timeout=5).run(first_input="x")
    assert await handler == "Workflow complete."
    run = tel.one("invoke_workflow MyWorkflow")
    caller_span = tel.one("caller request")
    assert caller.get_span_context().span_id == span_id(caller_span)
    assert parent_id(run) == span_id(caller_span)
    assert trace_id(run) == trace_id(caller_span)
    for step_span in seed_step_spans(tel):
        assert trace_id(step_span) == trace_id(caller_span)


@pytest.mark.asyncio
async def test_a_run_started_inside_a_step_is_a_child_of_that_step_span(
    tel: CapturedTelemetry,
) -> None:
    """A workflow run from a step's code gets the step span as its run span's parent."""
    inner = Inner(timeout=5)
    handler = Outer(timeout=5).run(start_event=NestedStart(inner=inner))
    assert await handler == "inner"
    outer_step = tel.one(step_span_name("outer_step"))
    inner_run = tel.one(run_span_name("Inner"))
    inner_step = tel.one(step_span_name("inner_step"))
    assert parent_id(inner_run) == span_id(outer_step)
    assert parent_id(inner_step) == span_id(inner_run)
    assert trace_id(inner_step) == trace_id(outer_step)


@pytest.mark.asyncio
async def test_failed_run_span_records_status_error_type_and_exception(
    tel: CapturedTelemetry,
) -> None:
    """A run whose step raises ends its run span with ERROR, error.type and the exception."""
    error = await failure_of(Failing(timeout=5).run())
    assert isinstance(error, ValueError)
    run = tel.one(run_span_name("Failing"))
    assert attr(run, attrs.RUN_STATUS) == "error"
    assert run.status.status_code is StatusCode.ERROR
    assert attr(run, "error.type") == "ValueError"
    assert attr(run, attrs.ERROR_TYPE) == "ValueError"
    recorded = exception_events(run)
    assert len(recorded) == 1
    assert recorded[0]["exception.type"] == "ValueError"
    assert recorded[0]["exception.message"] == "boom"


@pytest.mark.asyncio
async def test_timed_out_run_span_records_status_error_type_and_exception(
    tel: CapturedTelemetry,
) -> None:
    """A run that exceeds Workflow(timeout=...) ends its span ERROR with status timeout."""
    assert isinstance(await failure_of(Slow(timeout=0.1).run()), WorkflowTimeoutError)
    run = tel.one(run_span_name("Slow"))
    assert attr(run, attrs.RUN_STATUS) == "timeout"
    assert run.status.status_code is StatusCode.ERROR
    assert attr(run, attrs.ERROR_TYPE) == "WorkflowTimeoutError"
    assert [e["exception.type"] for e in exception_events(run)] == [
        "stepstream.errors.WorkflowTimeoutError"
    ]


@pytest.mark.asyncio
async def test_cancelled_run_span_has_status_cancelled(tel: CapturedTelemetry) -> None:
    """cancel_run() ends the run span with stepstream.run.status = cancelled."""
    assert isinstance(
        await cancel_after(Slow(timeout=5).run(), ProgressEvent), WorkflowCancelledError
    )
    run = tel.one(run_span_name("Slow"))
    assert attr(run, attrs.RUN_STATUS) == "cancelled"
    assert attr(run, attrs.RUN_STATUS) == attrs.STATUS_CANCELLED
    dawdle = tel.one(step_span_name("dawdle"))
    assert parent_id(dawdle) == span_id(run)


# -- step spans -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_step_spans_are_children_of_the_run_span_with_the_contract_attributes(
    tel: CapturedTelemetry,
) -> None:
    """Each seed step span is an INTERNAL child of the run span carrying every step attribute."""
    run_id, events = await run_seed()
    run = tel.one(run_span_name("MyWorkflow"))
    written = [ev for ev in events if isinstance(ev, ProgressEvent)]
    expected = {
        "step_one": ("StartEvent", "FirstEvent", 1),
        "step_two": ("FirstEvent", "SecondEvent", len(written) - 2),
        "step_three": ("SecondEvent", "StopEvent", 1),
    }
    for name, span in zip(SEED_STEPS, seed_step_spans(tel), strict=True):
        event_in, event_out, streamed = expected[name]
        assert span.kind is SpanKind.INTERNAL
        assert parent_id(span) == span_id(run)
        assert trace_id(span) == trace_id(run)
        assert attr(span, "stepstream.run_id") == run_id
        assert attr(span, attrs.WORKFLOW) == "MyWorkflow"
        assert attr(span, "stepstream.step") == name
        assert attr(span, "stepstream.step.attempt") == 1
        assert attr(span, attrs.STEP_WORKER) == 0
        assert attr(span, "stepstream.event.in") == event_in
        assert attr(span, "stepstream.event.out") == event_out
        assert attr(span, "stepstream.events.streamed") == streamed
        assert attr(span, "stepstream.step.status") == "ok"
        assert span.status.status_code is not StatusCode.ERROR
        assert span.start_time is not None
        assert run.start_time is not None
        assert span.end_time is not None
        assert run.end_time is not None
        assert run.start_time <= span.start_time <= span.end_time <= run.end_time
    assert len(written) > 100


@pytest.mark.asyncio
async def test_step_that_returns_nothing_records_event_out_none(tel: CapturedTelemetry) -> None:
    """A step invocation that returns None has stepstream.event.out = "None"."""
    assert await FanOut(timeout=5).run() == [0, 1, 2]
    outs = [attr(s, attrs.EVENT_OUT) for s in tel.named(step_span_name("join"))]
    assert sorted(outs) == ["None", "None", "StopEvent"]
    assert attr(tel.one(step_span_name("start")), attrs.EVENT_OUT) == "None"


@pytest.mark.asyncio
async def test_step_span_links_to_the_span_that_produced_its_event(tel: CapturedTelemetry) -> None:
    """step_two's span links to step_one's span and step_three's to step_two's."""
    await run_seed()
    one, two, three = seed_step_spans(tel)
    assert [link.context.span_id for link in one.links] == []
    assert [link.context.span_id for link in two.links] == [span_id(one)]
    assert [link.context.span_id for link in three.links] == [span_id(two)]
    assert two.links[0].context.trace_id == trace_id(one)


@pytest.mark.asyncio
async def test_collecting_join_links_every_collected_worker_span(tel: CapturedTelemetry) -> None:
    """The join invocation completing a collect_events of 3 links to all 3 worker spans."""
    assert await FanOut(timeout=5).run() == [0, 1, 2]
    workers = tel.named(step_span_name("worker"))
    assert len(workers) == 3
    start = tel.one(step_span_name("start"))
    for worker in workers:
        assert [link.context.span_id for link in worker.links] == [span_id(start)]
    assert sorted(attr(w, attrs.STEP_WORKER) for w in workers) == [0, 1, 2]
    joins = tel.named(step_span_name("join"))
    completing = [j for j in joins if attr(j, attrs.EVENT_OUT) == "StopEvent"]
    assert len(completing) == 1
    linked = [link.context.span_id for link in completing[0].links]
    assert sorted(linked) == sorted(span_id(w) for w in workers)


@pytest.mark.asyncio
async def test_failed_step_span_records_error_status_type_and_exception(
    tel: CapturedTelemetry,
) -> None:
    """A step that raises ends its span with ERROR, error.type and the recorded exception."""
    assert isinstance(await failure_of(Failing(timeout=5).run()), ValueError)
    span = tel.one(step_span_name("explode"))
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, attrs.ERROR_TYPE) == "ValueError"
    assert [e["exception.type"] for e in exception_events(span)] == ["ValueError"]
    assert attr(span, attrs.EVENTS_STREAMED) == 1
    assert attr(span, attrs.STEP_STATUS) == attrs.STATUS_ERROR


@pytest.mark.asyncio
async def test_step_timeout_ends_the_step_span_with_error(tel: CapturedTelemetry) -> None:
    """A step exceeding its @step timeout ends its span ERROR and the run as timeout."""
    assert isinstance(await failure_of(StepTimeout(timeout=5).run()), WorkflowTimeoutError)
    span = tel.one(step_span_name("dawdle"))
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, attrs.ERROR_TYPE)
    run = tel.one(run_span_name("StepTimeout"))
    assert attr(run, attrs.RUN_STATUS) == attrs.STATUS_TIMEOUT
    assert run.status.status_code is StatusCode.ERROR


@pytest.mark.asyncio
async def test_retried_attempt_is_a_new_span_after_an_error_span(tel: CapturedTelemetry) -> None:
    """A failed attempt ends ERROR; the retry is a second span with attempt 2 that ends ok."""
    assert await Flaky(timeout=5).run() == 2
    first, second = tel.named(step_span_name("flaky"))
    run = tel.one(run_span_name("Flaky"))
    begin = tel.one(step_span_name("begin"))
    assert attr(first, attrs.STEP_ATTEMPT) == 1
    assert first.status.status_code is StatusCode.ERROR
    assert attr(first, attrs.ERROR_TYPE) == "ConnectionError"
    assert [e["exception.type"] for e in exception_events(first)] == ["ConnectionError"]
    assert attr(second, attrs.STEP_ATTEMPT) == 2
    assert second.status.status_code is not StatusCode.ERROR
    assert attr(second, attrs.EVENT_OUT) == "StopEvent"
    assert span_id(first) != span_id(second)
    for attempt in (first, second):
        assert parent_id(attempt) == span_id(run)
        assert [link.context.span_id for link in attempt.links] == [span_id(begin)]
    assert attr(run, attrs.RUN_STATUS) == "ok"


@pytest.mark.asyncio
async def test_wait_for_event_is_recorded_as_span_events_on_the_same_step_span(
    tel: CapturedTelemetry,
) -> None:
    """A step waiting in wait_for_event keeps one span with stepstream.wait then resume events."""
    handler = Asker(timeout=5).run()
    await answer_prompts(handler, HumanResponseEvent(response="yes"))
    assert await handler == "yes"
    span = tel.one(step_span_name("ask"))
    names = [ev.name for ev in span.events]
    assert names.count("stepstream.wait") == 1
    assert names.count("stepstream.resume") == 1
    assert names.count(attrs.WAIT_EVENT) == 1
    assert names.index(attrs.WAIT_EVENT) < names.index(attrs.RESUME_EVENT)
    assert names.index(attrs.STREAM_EVENT) < names.index(attrs.WAIT_EVENT)
    wait = span.events[names.index(attrs.WAIT_EVENT)]
    resume = span.events[names.index(attrs.RESUME_EVENT)]
    assert (wait.attributes or {})[attrs.WAIT_EVENT_TYPE] == "HumanResponseEvent"
    assert (resume.attributes or {})[attrs.EVENT_TYPE] == "HumanResponseEvent"
    assert attr(span, attrs.EVENT_OUT) == "StopEvent"


# -- user code runs with the step span current ----------------------------------------


@pytest.mark.parametrize(
    "workflow",
    [
        pytest.param(AsyncUserSpan, id="async-step"),
        pytest.param(SyncUserSpan, id="sync-step-in-thread"),
        pytest.param(TaskUserSpan, id="task-started-by-step"),
    ],
)
@pytest.mark.asyncio
async def test_user_span_opened_in_step_code_is_a_child_of_the_step_span(
    tel: CapturedTelemetry, workflow: type[Workflow]
) -> None:
    """A span user code opens inside a step (async, sync in a thread, or a task) nests under it."""
    tracer = tel.tracer_provider.get_tracer("user")
    assert await workflow(timeout=5).run(start_event=TracedStart(tracer=tracer)) == "ok"
    step_span = tel.one(step_span_name("work"))
    user = tel.one("user work")
    assert parent_id(user) == span_id(step_span)
    assert trace_id(user) == trace_id(step_span)
    ran_in_thread = attr(user, "user.thread") != threading.get_ident()
    assert ran_in_thread is (workflow is SyncUserSpan)


@pytest.mark.asyncio
async def test_caller_context_is_untouched_by_a_run(tel: CapturedTelemetry) -> None:
    """After awaiting a run, the caller's current span is still its own."""
    tracer = tel.tracer_provider.get_tracer("caller")
    with tracer.start_as_current_span("caller request") as caller:
        await run_seed()
        assert trace.get_current_span() is caller
    assert not trace.get_current_span().get_span_context().is_valid


# -- span events per streamed event ---------------------------------------------------


@pytest.mark.asyncio
async def test_step_span_events_equal_the_streamed_events_in_order(tel: CapturedTelemetry) -> None:
    """The stepstream.event span events across the seed's step spans are the stream, in order."""
    _, events = await run_seed()
    recorded: list[dict[str, Any]] = []
    for span in seed_step_spans(tel):
        own = stream_span_events(span)
        assert len(own) == attr(span, attrs.EVENTS_STREAMED)
        recorded.extend(own)
    assert recorded_stream(recorded) == expected_stream(events)[:-1]
    assert [e["stepstream.event.seq"] for e in recorded] == list(range(len(events) - 1))
    assert {e["stepstream.event.type"] for e in recorded} == {"ProgressEvent"}
    first = json.loads(recorded[0]["stepstream.event.payload"])
    assert first == {"msg": "Step one is happening"}
    one = seed_step_spans(tel)[0]
    assert [ev.name for ev in one.events] == ["stepstream.event"]


@pytest.mark.asyncio
async def test_terminal_event_is_a_span_event_on_the_run_span(tel: CapturedTelemetry) -> None:
    """The terminal StopEvent is recorded on the run span with the last seq of the stream."""
    _, events = await run_seed()
    run = tel.one(run_span_name("MyWorkflow"))
    terminal = stream_span_events(run)
    assert recorded_stream(terminal) == expected_stream(events)[-1:]
    assert terminal[0][attrs.EVENT_TYPE] == "StopEvent"
    assert json.loads(terminal[0][attrs.EVENT_PAYLOAD]) == {"result": "Workflow complete."}


@pytest.mark.asyncio
async def test_failed_run_records_its_terminal_event_on_the_run_span(
    tel: CapturedTelemetry,
) -> None:
    """A failing run records its written event on the step span, WorkflowFailedEvent on the run."""
    handler = Failing(timeout=5).run()
    events = await drain(handler)
    await outcome(handler)
    step_events = stream_span_events(tel.one(step_span_name("explode")))
    run_events = stream_span_events(tel.one(run_span_name("Failing")))
    assert recorded_stream(step_events + run_events) == expected_stream(events)
    assert run_events[0][attrs.EVENT_TYPE] == "WorkflowFailedEvent"


@pytest.mark.asyncio
async def test_stream_span_events_are_timestamped_when_written(tel: CapturedTelemetry) -> None:
    """Each stream span event's timestamp lies between the clock just before and after its write."""
    handler = Timed(timeout=5).run()
    await drain(handler)
    marks: list[tuple[int, int]] = await handler
    span = tel.one(step_span_name("work"))
    recorded = stream_span_events(span)
    times = [e["time"] for e in recorded]
    assert len(times) == len(marks) == 5
    for stamp, (before, after) in zip(times, marks, strict=True):
        assert before <= stamp <= after
    assert times == sorted(times)
    assert times[0] < times[-1]
    assert span.start_time is not None
    assert span.end_time is not None
    assert span.start_time <= times[0]
    assert times[-1] <= span.end_time


@pytest.mark.asyncio
async def test_seed_stream_span_event_timestamps_increase_within_their_step_span(
    tel: CapturedTelemetry,
) -> None:
    """Across the seed run, stream span event times never go backwards and sit inside their span."""
    await run_seed()
    previous = 0
    for span in seed_step_spans(tel):
        assert span.start_time is not None
        assert span.end_time is not None
        for event in stream_span_events(span):
            assert span.start_time <= event["time"] <= span.end_time
            assert event["time"] >= previous
            previous = event["time"]


@pytest.mark.asyncio
async def test_long_payload_is_truncated_at_4096_with_a_visible_marker(
    tel: CapturedTelemetry,
) -> None:
    """A payload longer than 4096 characters is cut there and ends with the truncation marker."""
    assert attrs.DEFAULT_PAYLOAD_LIMIT == 4096
    handler = BigWriter(timeout=5).run(size=5000)
    events = await drain(handler)
    full = events[0].model_dump_json()
    payload = stream_span_events(tel.one(step_span_name("work")))[0][attrs.EVENT_PAYLOAD]
    hidden = len(full) - 4096
    assert payload == full[:4096] + f"...[truncated {hidden} chars]"
    assert payload == full[:4096] + attrs.TRUNCATED_MARKER.format(n=hidden)


@pytest.mark.asyncio
async def test_payload_of_exactly_the_limit_is_kept_whole(tel: CapturedTelemetry) -> None:
    """A payload of exactly 4096 characters is recorded unchanged."""
    overhead = len(Big(text="").model_dump_json())
    handler = BigWriter(timeout=5).run(size=4096 - overhead)
    events = await drain(handler)
    full = events[0].model_dump_json()
    assert len(full) == 4096
    payload = stream_span_events(tel.one(step_span_name("work")))[0][attrs.EVENT_PAYLOAD]
    assert payload == full


@pytest.mark.asyncio
async def test_concurrent_runs_keep_their_spans_apart(tel: CapturedTelemetry) -> None:
    """Five concurrent seed runs give five traces, each with its own three step spans."""
    handlers = [MyWorkflow(timeout=5).run(first_input=str(i)) for i in range(5)]
    for handler in handlers:
        await drain(handler)
        assert await handler == "Workflow complete."
    runs = tel.named(run_span_name("MyWorkflow"))
    assert sorted(attr(r, attrs.RUN_ID) for r in runs) == sorted(h.run_id for h in handlers)
    for run in runs:
        children = [s for s in tel.spans if parent_id(s) == span_id(run)]
        assert sorted(s.name for s in children) == sorted(step_span_name(n) for n in SEED_STEPS)
        for child in children:
            assert attr(child, attrs.RUN_ID) == attr(run, attrs.RUN_ID)
            assert trace_id(child) == trace_id(run)
    assert len({trace_id(r) for r in runs}) == 5


# -- every started span is ended --------------------------------------------------------


async def expect(error: type[Exception], ending: Awaitable[BaseException | None]) -> None:
    """Check that the run ``ending`` reads and awaits raises ``error``."""
    assert isinstance(await ending, error)


async def returns(handler: WorkflowHandler, result: Any) -> None:
    """Check that the run of ``handler`` returns ``result``."""
    assert await handler == result


async def scenario_wait_for_cancels(tel: CapturedTelemetry) -> None:
    """asyncio.wait_for() on the handler times out, which cancels the run's task."""
    handler = Slow(timeout=5).run()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(handler, 0.1)
    with pytest.raises((asyncio.CancelledError, WorkflowCancelledError)):
        await handler
    run = tel.one(run_span_name("Slow"))
    assert attr(run, attrs.RUN_STATUS) == attrs.STATUS_CANCELLED


async def scenario_sync_step_timeout(tel: CapturedTelemetry) -> None:
    """The run times out while a plain-def step blocks its worker thread."""
    BLOCKER.clear()
    try:
        await expect(WorkflowTimeoutError, failure_of(BlockingSync(timeout=0.1).run()))
    finally:
        BLOCKER.set()


#: Ways a run ends: the seed to the end, a step raising, the run's or a step's timeout,
#: cancel_run() while a step sleeps or waits in wait_for_event, asyncio.wait_for() on the
#: handler, a retried step, a StopEvent with a sibling in flight, a blocked worker thread.
ENDINGS: dict[str, Callable[[CapturedTelemetry], Awaitable[object]]] = {
    "ok": lambda _: run_seed(),
    "failure": lambda _: expect(ValueError, failure_of(Failing(timeout=5).run())),
    "run-timeout": lambda _: expect(WorkflowTimeoutError, failure_of(Slow(timeout=0.1).run())),
    "step-timeout": lambda _: expect(
        WorkflowTimeoutError, failure_of(StepTimeout(timeout=5).run())
    ),
    "cancel-run": lambda _: expect(
        WorkflowCancelledError, cancel_after(Slow(timeout=5).run(), ProgressEvent)
    ),
    "cancel-while-waiting": lambda _: expect(
        WorkflowCancelledError, cancel_after(Asker(timeout=5).run(), InputRequiredEvent)
    ),
    "wait-for-cancels-the-task": scenario_wait_for_cancels,
    "retry": lambda _: returns(Flaky(timeout=5).run(), 2),
    "stop-cancels-sibling": lambda _: returns(Racing(timeout=5).run(), "fast"),
    "sync-step-timeout": scenario_sync_step_timeout,
}


@pytest.mark.parametrize("ending", list(ENDINGS))
@pytest.mark.asyncio
async def test_every_started_span_is_ended(tel: CapturedTelemetry, ending: str) -> None:
    """Whatever ends the run, each span stepstream started has been ended exactly once."""
    await ENDINGS[ending](tel)
    assert len(tel.spans) >= 2
    assert tel.all_spans_ended_once()
    scopes = {s.instrumentation_scope.name if s.instrumentation_scope else None for s in tel.spans}
    assert scopes == {"stepstream"}
    runs = [s for s in tel.spans if s.name.startswith("invoke_workflow ")]
    assert len(runs) == 1
