"""Step faults: every way a step can fail ends the run as documented, leaking no span or run.

Each test captures its runs' spans (counting how often each was started and ended) and
metrics in memory with ``capture_telemetry()``, the ``tel`` fixture (nothing global).
After the run: every span started was ended exactly once, the SDK never saw a second
``end()``, and ``stepstream.runs.active`` is 0.
"""

import asyncio
import gc
import logging
import time
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from _helpers import assert_clean
from _helpers import assert_ended
from _helpers import attr
from _helpers import drain
from _helpers import run_span
from _helpers import sleep_unless_cancelled
from _helpers import step_spans
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimedOutEvent
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

#: stepstream's grace period for steps that ignore cancellation (CANCEL_GRACE_SECONDS in
#: the runtime, not public): hardcoded here on purpose, the bounds below are generous.
CANCEL_GRACE_SECONDS = 2.0


async def all_spans_end(tel: CapturedTelemetry, timeout: float) -> None:
    """Wait until every started span has ended (a step may stop late)."""
    async with asyncio.timeout(timeout):
        while not tel.all_spans_ended_once():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


# -- events ---------------------------------------------------------------------------------


class Progress(Event):
    n: int


class Next(Event):
    pass


# -- exceptions -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_exception_in_async_step_fails_the_run(tel: CapturedTelemetry) -> None:
    """An async step raising ends the stream with WorkflowFailedEvent and re-raises its error."""
    error = ValueError("async boom")

    class AsyncBoom(Workflow):
        @step
        async def boom(self, ev: StartEvent) -> StopEvent:
            raise error

    handler = AsyncBoom(timeout=5).run()
    streamed = await drain(handler)
    with pytest.raises(ValueError, match="async boom") as raised:
        await handler
    assert raised.value is error
    (terminal,) = streamed
    assert isinstance(terminal, WorkflowFailedEvent)
    assert (terminal.step, terminal.exception_type, terminal.message) == (
        "boom",
        "ValueError",
        "async boom",
    )
    (span,) = step_spans(tel, "boom")
    assert span.status.status_code is StatusCode.ERROR
    assert attr(span, attrs.STEP_STATUS) == "error"
    assert_ended(tel, "error")


@pytest.mark.asyncio
async def test_exception_in_sync_step_fails_the_run(tel: CapturedTelemetry) -> None:
    """A plain def step raising in its worker thread fails the run like an async step does."""

    class SyncBoom(Workflow):
        @step
        def boom(self, ev: StartEvent) -> StopEvent:
            msg = "sync boom"
            raise KeyError(msg)

    handler = SyncBoom(timeout=5).run()
    streamed = await drain(handler)
    with pytest.raises(KeyError, match="sync boom"):
        await handler
    (terminal,) = streamed
    assert isinstance(terminal, WorkflowFailedEvent)
    assert (terminal.step, terminal.exception_type) == ("boom", "KeyError")
    (span,) = step_spans(tel, "boom")
    assert span.status.status_code is StatusCode.ERROR
    assert_clean(tel)


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
@pytest.mark.asyncio
async def test_events_streamed_before_a_failure_stay_in_the_stream(
    tel: CapturedTelemetry, is_async: bool
) -> None:
    """Events a step streamed before raising are delivered, in order, before the failure."""

    class WritesThenAsyncFails(Workflow):
        @step
        async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            for n in range(3):
                ctx.write_event_to_stream(Progress(n=n))
                await asyncio.sleep(0)
            msg = "after three"
            raise RuntimeError(msg)

    class WritesThenSyncFails(Workflow):
        @step
        def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            for n in range(3):
                ctx.write_event_to_stream(Progress(n=n))
            msg = "after three"
            raise RuntimeError(msg)

    cls = WritesThenAsyncFails if is_async else WritesThenSyncFails
    handler = cls(timeout=5).run()
    streamed = await drain(handler)
    with pytest.raises(RuntimeError, match="after three"):
        await handler
    assert [ev.n for ev in streamed if isinstance(ev, Progress)] == [0, 1, 2]
    assert isinstance(streamed[-1], WorkflowFailedEvent)
    assert len(streamed) == 4
    (span,) = step_spans(tel, "work")
    assert attr(span, attrs.EVENTS_STREAMED) == 3
    seqs = [
        (e.attributes or {})[attrs.EVENT_SEQ] for e in span.events if e.name == attrs.STREAM_EVENT
    ]
    assert seqs == [0, 1, 2]
    assert_clean(tel)


class Abort(BaseException):
    """A BaseException that is not an Exception (like pytest.fail's or a framework's)."""


@pytest.mark.asyncio
async def test_base_exception_in_step_fails_the_run(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A step raising a non-Exception BaseException fails the run like any step error."""

    class Aborts(Workflow):
        @step
        async def abort(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Progress(n=0))
            msg = "pulled the plug"
            raise Abort(msg)

    handler = Aborts(timeout=5).run()
    streamed = await drain(handler)
    raised: str = "nothing"
    try:
        await handler
    except (Exception, Abort) as exc:  # noqa: BLE001 - which one is the point
        raised = repr(exc)  # not the exception: its traceback would keep the run alive
    # Let the run's task end and be collected here, so that whatever it leaves behind
    # is seen by this test and not by a later one.
    async with asyncio.timeout(5):
        while len(asyncio.all_tasks()) > 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    for _ in range(3):  # the task's done callbacks run in the next iterations
        await asyncio.sleep(0)
    del handler
    gc.collect()
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent), f"the run ended with {terminal!r}"
    assert (terminal.step, terminal.exception_type) == ("abort", "Abort")
    assert raised == "Abort('pulled the plug')", f"await handler raised {raised}"
    complaints = [
        r.getMessage()
        for r in caplog.records
        if "internal error" in r.getMessage() or "never retrieved" in r.getMessage()
    ]
    assert complaints == []
    assert_clean(tel)


# -- retries ----------------------------------------------------------------------------------


class Flaky(Workflow):
    """A step failing its first ``failures`` attempts, retried up to 3 attempts."""

    def __init__(self, failures: int, **kwargs: Any) -> None:
        super().__init__(timeout=5, **kwargs)
        self.failures = failures
        self.attempts = 0

    @step(retry_policy=retry_policy(wait=wait_fixed(0.01), stop=stop_after_attempt(3)))
    async def flaky(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        self.attempts += 1
        ctx.write_event_to_stream(Progress(n=self.attempts))
        if self.attempts <= self.failures:
            msg = f"attempt {self.attempts} failed"
            raise ConnectionError(msg)
        return StopEvent(result=f"ok after {self.attempts}")


@pytest.mark.asyncio
async def test_retried_step_that_finally_succeeds(tel: CapturedTelemetry) -> None:
    """A step failing twice then succeeding ends the run ok, with one span per attempt."""
    wf = Flaky(failures=2)
    handler = wf.run()
    streamed = await drain(handler)
    assert await handler == "ok after 3"
    assert [ev.n for ev in streamed if isinstance(ev, Progress)] == [1, 2, 3]
    assert type(streamed[-1]) is StopEvent
    spans = step_spans(tel, "flaky")
    assert [attr(s, attrs.STEP_ATTEMPT) for s in spans] == [1, 2, 3]
    assert [attr(s, attrs.STEP_STATUS) for s in spans] == ["error", "error", "ok"]
    assert tel.metric_sum(attrs.METRIC_STEP_RETRIES) == 2
    assert_ended(tel, "ok")


@pytest.mark.asyncio
async def test_retried_step_that_finally_fails(tel: CapturedTelemetry) -> None:
    """A step failing all three attempts fails the run with the last attempt's error."""
    wf = Flaky(failures=5)
    handler = wf.run()
    streamed = await drain(handler)
    with pytest.raises(ConnectionError, match="attempt 3 failed"):
        await handler
    assert wf.attempts == 3
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.message == "attempt 3 failed"
    spans = step_spans(tel, "flaky")
    assert [attr(s, attrs.STEP_ATTEMPT) for s in spans] == [1, 2, 3]
    assert all(s.status.status_code is StatusCode.ERROR for s in spans)
    assert tel.metric_sum(attrs.METRIC_STEP_RETRIES) == 2
    assert_ended(tel, "error")


# -- CancelledError raised by user code ---------------------------------------------------------


@pytest.mark.parametrize("is_async", [True, False], ids=["async", "sync"])
@pytest.mark.asyncio
async def test_cancelled_error_raised_by_step_code_fails_the_run(
    tel: CapturedTelemetry, is_async: bool
) -> None:
    """A step raising asyncio.CancelledError itself fails the run with an error naming it."""

    class AsyncRaisesCancelled(Workflow):
        @step
        async def rogue(self, ev: StartEvent) -> StopEvent:
            raise asyncio.CancelledError

    class SyncRaisesCancelled(Workflow):
        @step
        def rogue(self, ev: StartEvent) -> StopEvent:
            raise asyncio.CancelledError

    cls = AsyncRaisesCancelled if is_async else SyncRaisesCancelled
    handler = cls(timeout=5).run()
    streamed = await drain(handler)
    expected = r"step 'rogue' raised asyncio\.CancelledError without being cancelled"
    with pytest.raises(WorkflowRuntimeError, match=expected) as raised:
        await handler
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    (terminal,) = streamed
    assert isinstance(terminal, WorkflowFailedEvent)
    assert (terminal.step, terminal.exception_type) == ("rogue", "WorkflowRuntimeError")
    (span,) = step_spans(tel, "rogue")
    assert attr(span, attrs.STEP_STATUS) == "error"
    assert_ended(tel, "error")


@pytest.mark.asyncio
async def test_cancelled_error_in_one_branch_cancels_its_siblings(tel: CapturedTelemetry) -> None:
    """A CancelledError raised by one step's code fails the run and stops a sleeping sibling."""
    sibling_cancelled = asyncio.Event()

    class Branches(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> Next | None:
            ctx.send_event(Next())
            raise asyncio.CancelledError

        @step
        async def sibling(self, ev: Next) -> StopEvent:
            await sleep_unless_cancelled(10, sibling_cancelled)
            return StopEvent()

    handler = Branches(timeout=5).run()
    with pytest.raises(WorkflowRuntimeError, match=r"step 'start' raised asyncio\.CancelledError"):
        async with asyncio.timeout(5):
            await handler
    assert sibling_cancelled.is_set()
    await drain(handler)
    assert_clean(tel)


# -- steps that never return ----------------------------------------------------------------------


class Hang(Workflow):
    """A step that never returns (a ten-minute sleep)."""

    @step
    async def hang(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(n=1))
        await asyncio.sleep(600)
        return StopEvent()


class HangWithStepTimeout(Workflow):
    """A step that never returns, bounded by its own @step timeout."""

    @step(timeout=0.2)
    async def hang(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(n=1))
        await asyncio.sleep(600)
        return StopEvent()


async def times_out(wf: Workflow, match: str) -> tuple[list[Event], WorkflowTimeoutError]:
    """Run ``wf``, which must time out within 2 s raising ``match``; its stream and error."""
    started = time.monotonic()
    handler = wf.run()
    streamed = await drain(handler)
    with pytest.raises(WorkflowTimeoutError, match=match) as raised:
        await handler
    assert time.monotonic() - started < 2
    return streamed, raised.value


@pytest.mark.asyncio
async def test_step_that_never_returns_hits_the_run_timeout(tel: CapturedTelemetry) -> None:
    """A hanging step ends the run at the workflow timeout, naming the step still active."""
    expected = r"workflow Hang timed out after 0\.2s; steps still active: hang\. Raise"
    streamed, error = await times_out(Hang(timeout=0.2), expected)
    assert error.active_steps == ("hang",)
    assert error.timeout == 0.2
    assert [type(ev) for ev in streamed] == [Progress, WorkflowTimedOutEvent]
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowTimedOutEvent)
    assert terminal.active_steps == ["hang"]
    (span,) = step_spans(tel, "hang")
    assert attr(span, attrs.STEP_STATUS) == "cancelled"
    run = run_span(tel)
    assert attr(run, attrs.RUN_STATUS) == "timeout"
    assert run.status.status_code is StatusCode.ERROR
    assert_clean(tel)


@pytest.mark.asyncio
async def test_step_that_never_returns_hits_its_step_timeout(tel: CapturedTelemetry) -> None:
    """A hanging step with @step(timeout=0.2) ends the run with a timeout naming the step."""
    expected = r"step 'hang' timed out after 0\.2s \(its @step timeout\)"
    streamed, _ = await times_out(HangWithStepTimeout(timeout=30), expected)
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowTimedOutEvent)
    assert terminal.timeout == 0.2
    (span,) = step_spans(tel, "hang")
    assert attr(span, attrs.STEP_STATUS) == "timeout"
    assert span.status.status_code is StatusCode.ERROR
    assert_ended(tel, "timeout")


# -- steps that swallow cancellation ------------------------------------------------------


class Swallower(Workflow):
    """One branch stops the run; the other catches its CancelledError once and carries on."""

    def __init__(self, linger: float, **kwargs: Any) -> None:
        super().__init__(timeout=30, **kwargs)
        self.linger = linger
        self.swallowed = asyncio.Event()
        self.returned = asyncio.Event()

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Next | Progress | None:
        ctx.send_event(Next())
        await asyncio.sleep(0.05)
        ctx.send_event(Progress(n=0))
        return None

    @step
    async def stubborn(self, ctx: Context[Any], ev: Next) -> StopEvent:
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            self.swallowed.set()
            await asyncio.sleep(self.linger)  # carries on after being told to stop
            ctx.write_event_to_stream(Progress(n=99))  # too late: the run has ended
        self.returned.set()
        return StopEvent(result="stubborn")

    @step
    async def stopper(self, ev: Progress) -> StopEvent:
        return StopEvent(result="stopped")


@pytest.mark.asyncio
async def test_step_swallowing_cancellation_delays_the_outcome_by_the_grace_period_at_most(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A step ignoring cancellation past the grace period: outcome after ~2 s, a warning."""
    wf = Swallower(linger=CANCEL_GRACE_SECONDS + 0.4)
    started = time.monotonic()
    handler = wf.run()
    streamed = await drain(handler, timeout=CANCEL_GRACE_SECONDS + 2)
    assert await handler == "stopped"
    waited = time.monotonic() - started
    assert CANCEL_GRACE_SECONDS - 0.3 < waited < CANCEL_GRACE_SECONDS + 1
    assert wf.swallowed.is_set()
    assert not wf.returned.is_set(), "the outcome waited for the stubborn step"
    assert [type(ev) for ev in streamed] == [StopEvent]
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "stepstream" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "stubborn" in warnings[0]
    assert "ignored cancellation" in warnings[0]
    assert handler.run_id in warnings[0]
    # The run's task still waits for the step; its span ends once, when it returns.
    assert len(step_spans(tel, "stubborn")) == 0
    async with asyncio.timeout(3):
        await wf.returned.wait()
    await all_spans_end(tel, timeout=2)
    (span,) = step_spans(tel, "stubborn")
    assert attr(span, attrs.EVENTS_STREAMED) == 0
    assert_clean(tel)


@pytest.mark.asyncio
async def test_step_swallowing_cancellation_briefly_is_waited_for(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A step that stops 0.2 s after its cancellation delays the outcome until it stopped."""
    wf = Swallower(linger=0.2)
    started = time.monotonic()
    handler = wf.run()
    streamed = await drain(handler)
    assert await handler == "stopped"
    assert 0.2 <= time.monotonic() - started < CANCEL_GRACE_SECONDS
    assert wf.returned.is_set(), "the outcome was published before the step stopped"
    assert [type(ev) for ev in streamed] == [StopEvent]
    assert [r.getMessage() for r in caplog.records if r.name == "stepstream"] == []
    await all_spans_end(tel, timeout=2)
    assert_clean(tel)
