"""Steps: routing by annotation, options, worker threads, free functions and retries."""

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from _future_annotations_wf import FutureWorkflow
from _future_annotations_wf import make_local_workflow
from _helpers import StepTimeout
from _helpers import drain
from stepstream import ConstantDelayRetryPolicy
from stepstream import Context
from stepstream import Event
from stepstream import RetryPolicy
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowTimedOutEvent
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed


class EvA(Event):
    n: int


class EvB(Event):
    n: int


class Done(Event):
    label: str


class Note(Event):
    text: str


class Parent(Event):
    pass


class Child(Parent):
    pass


class Job(Event):
    i: int


class Middle(Event):
    text: str


# --- routing by annotation -------------------------------------------------------------


@pytest.mark.asyncio
async def test_union_annotation_routes_each_member_type_and_nothing_else() -> None:
    """A step annotated `ev: EvA | EvB` receives both types; one annotated `ev: EvA` only EvA."""
    union_got: list[str] = []
    only_a_got: list[str] = []

    class UnionWorkflow(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> EvA | EvB | None:
            ctx.send_event(EvA(n=1))
            ctx.send_event(EvB(n=2))
            return None

        @step
        async def either(self, ev: EvA | EvB) -> Done:
            union_got.append(type(ev).__name__)
            return Done(label=f"either:{type(ev).__name__}")

        @step
        async def only_a(self, ev: EvA) -> Done:
            only_a_got.append(type(ev).__name__)
            return Done(label="only_a:EvA")

        @step
        async def finish(self, ctx: Context[Any], ev: Done) -> StopEvent | None:
            done = ctx.collect_events(ev, [Done] * 3)
            if done is None:
                return None
            return StopEvent(result=sorted(d.label for d in done if isinstance(d, Done)))

    result = await UnionWorkflow(timeout=5).run()
    assert result == ["either:EvA", "either:EvB", "only_a:EvA"]
    assert sorted(union_got) == ["EvA", "EvB"]
    assert only_a_got == ["EvA"]


@pytest.mark.asyncio
async def test_step_accepting_a_base_event_receives_its_subclasses() -> None:
    """A step annotated with an Event base class receives events of its subclasses."""

    class SubclassWorkflow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Child:
            return Child()

        @step
        async def handle(self, ev: Parent) -> StopEvent:
            return StopEvent(result=type(ev).__name__)

    assert await SubclassWorkflow(timeout=5).run() == "Child"


@pytest.mark.asyncio
async def test_event_accepted_by_two_steps_reaches_both_concurrently() -> None:
    """An event two steps accept is delivered to both, and they run at the same time."""
    barrier = asyncio.Barrier(2)

    class FanOutWorkflow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Job:
            return Job(i=0)

        @step
        async def left(self, ev: Job) -> Done:
            async with asyncio.timeout(1):
                await barrier.wait()  # only passes if `right` runs concurrently
            return Done(label="left")

        @step
        async def right(self, ev: Job) -> Done:
            async with asyncio.timeout(1):
                await barrier.wait()
            return Done(label="right")

        @step
        async def finish(self, ctx: Context[Any], ev: Done) -> StopEvent | None:
            done = ctx.collect_events(ev, [Done, Done])
            if done is None:
                return None
            return StopEvent(result=sorted(d.label for d in done if isinstance(d, Done)))

    assert await FanOutWorkflow(timeout=5).run() == ["left", "right"]


@pytest.mark.asyncio
async def test_returned_event_is_routed_to_the_step_accepting_it() -> None:
    """The event a step returns (declared in its return annotation) is delivered onward."""

    class ChainWorkflow(Workflow):
        @step
        async def first(self, ev: StartEvent) -> Middle:
            return Middle(text=str(ev.get("word")))

        @step
        async def second(self, ev: Middle) -> StopEvent:
            return StopEvent(result=ev.text * 2)

    assert await ChainWorkflow(timeout=5).run(word="ab") == "abab"


@pytest.mark.asyncio
async def test_returning_none_emits_nothing() -> None:
    """A step returning None emits no event: only the events it sends explicitly arrive."""
    pings: list[int] = []

    class NoneWorkflow(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> Job | None:
            ctx.send_event(Job(i=1))
            ctx.send_event(Job(i=2))
            return None

        @step(num_workers=1)
        async def work(self, ctx: Context[Any], ev: Job) -> StopEvent | None:
            pings.append(ev.i)
            if len(pings) < 2:
                return None
            await asyncio.sleep(0.05)  # room for any spurious extra delivery to show up
            return StopEvent(result=list(pings))

    handler = NoneWorkflow(timeout=5).run()
    streamed = await drain(handler)
    assert await handler == [1, 2]
    assert pings == [1, 2]
    assert [type(ev) for ev in streamed] == [StopEvent]


# --- step options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_workers", "jobs"),
    [
        pytest.param(1, 4, id="one-worker-serialises"),
        pytest.param(2, 6, id="two-workers"),
        pytest.param(3, 6, id="three-workers"),
        pytest.param(None, 8, id="default-is-four"),
    ],
)
@pytest.mark.asyncio
async def test_num_workers_bounds_concurrent_invocations(
    num_workers: int | None, jobs: int
) -> None:
    """@step(num_workers=N) runs at most N invocations of that step at once (default 4)."""
    active = 0
    peak = 0
    decorate = step if num_workers is None else step(num_workers=num_workers)
    expected_peak = 4 if num_workers is None else num_workers

    class PoolWorkflow(Workflow):
        @step
        async def start(self, ctx: Context[Any], ev: StartEvent) -> Job | None:
            for i in range(jobs):
                ctx.send_event(Job(i=i))
            return None

        @decorate
        async def work(self, ev: Job) -> Done:
            nonlocal active, peak
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.02)
            active -= 1
            return Done(label=str(ev.i))

        @step
        async def finish(self, ctx: Context[Any], ev: Done) -> StopEvent | None:
            done = ctx.collect_events(ev, [Done] * jobs)
            return None if done is None else StopEvent(result=len(done))

    assert await PoolWorkflow(timeout=5).run() == jobs
    assert peak == expected_peak


@pytest.mark.asyncio
async def test_step_timeout_ends_run_with_timeout_error_naming_the_step() -> None:
    """@step(timeout=...) ends a too-slow invocation's run with WorkflowTimeoutError."""
    handler = StepTimeout(timeout=5).run()
    started = time.monotonic()
    streamed = await drain(handler)
    expected = r"step 'dawdle' timed out after 0\.05s"
    with pytest.raises(WorkflowTimeoutError, match=expected) as info:
        await handler
    assert time.monotonic() - started < 1
    assert info.value.timeout == 0.05
    assert isinstance(streamed[-1], WorkflowTimedOutEvent)


@pytest.mark.asyncio
async def test_step_within_its_timeout_completes() -> None:
    """A step that finishes inside its @step(timeout=...) returns its result normally."""

    class QuickWorkflow(Workflow):
        @step(timeout=2)
        async def quick(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(0.01)
            return StopEvent(result="ok")

    assert await QuickWorkflow(timeout=5).run() == "ok"


@pytest.mark.asyncio
async def test_all_step_options_together() -> None:
    """num_workers, retry_policy and timeout can be combined on one @step."""
    calls = 0

    class OptionsWorkflow(Workflow):
        @step(
            num_workers=2,
            retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(2)),
            timeout=2.0,
        )
        async def flaky(self, ev: StartEvent) -> StopEvent:
            nonlocal calls
            calls += 1
            if calls == 1:
                msg = "first attempt fails"
                raise RuntimeError(msg)
            return StopEvent(result=calls)

    assert await OptionsWorkflow(timeout=5).run() == 2


@pytest.mark.asyncio
async def test_empty_parentheses_decorator_is_the_same_as_bare() -> None:
    """@step() with no options marks a step just like bare @step."""

    class ParensWorkflow(Workflow):
        @step()
        async def only(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result="parens")

    wf = ParensWorkflow(timeout=5)
    assert wf.steps == ("only",)
    assert await wf.run() == "parens"


# --- plain def steps -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_sync_step_runs_in_worker_thread_without_blocking_the_loop() -> None:
    """A plain `def` step runs off the event loop's thread, so the loop keeps running."""
    loop_thread = threading.current_thread()
    step_threads: list[threading.Thread] = []
    ticks = 0

    class SyncWorkflow(Workflow):
        @step
        def slow(self, ev: StartEvent) -> StopEvent:
            step_threads.append(threading.current_thread())
            time.sleep(0.2)
            return StopEvent(result="slept")

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    try:
        result = await SyncWorkflow(timeout=5).run()
    finally:
        tick_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick_task
    assert result == "slept"
    assert len(step_threads) == 1
    assert step_threads[0] is not loop_thread
    assert step_threads[0] is not threading.main_thread()
    # About 20 ticks fit into the 0.2 s sleep; a blocked loop would manage one or two.
    assert ticks >= 8


@pytest.mark.asyncio
async def test_sync_step_can_use_the_context_from_its_thread() -> None:
    """A plain `def` step can write to the stream and send events through its ctx."""

    class ThreadCtxWorkflow(Workflow):
        @step
        def relay(self, ctx: Context[Any], ev: StartEvent) -> Middle | None:
            ctx.write_event_to_stream(Note(text="from a thread"))
            ctx.send_event(Middle(text="sent from a thread"))
            return None

        @step
        async def finish(self, ev: Middle) -> StopEvent:
            return StopEvent(result=ev.text)

    handler = ThreadCtxWorkflow(timeout=5).run()
    streamed = await drain(handler)
    assert await handler == "sent from a thread"
    notes = [ev for ev in streamed if isinstance(ev, Note)]
    assert [n.text for n in notes] == ["from a thread"]


# --- free functions, annotations and the ctx parameter ----------------------------------------


@pytest.mark.asyncio
async def test_free_function_attached_with_workflow_option_becomes_a_step() -> None:
    """@step(workflow=Cls) adds a free function (no self) as a step of Cls."""

    class HalfWorkflow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Middle:
            return Middle(text="half")

    @step(workflow=HalfWorkflow)
    async def finish(ctx: Context[Any], ev: Middle) -> StopEvent:
        return StopEvent(result=f"{ev.text} + free")

    wf = HalfWorkflow(timeout=5)
    assert set(wf.steps) == {"start", "finish"}
    assert await wf.run() == "half + free"


@pytest.mark.asyncio
async def test_free_step_attached_after_instantiation_applies_to_new_instances() -> None:
    """A free step attached after a class was instantiated is part of later instances."""
    seen: list[str] = []

    class GrowingWorkflow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            await asyncio.sleep(0.02)
            return StopEvent(result="done")

    assert GrowingWorkflow(timeout=5).steps == ("start",)

    @step(workflow=GrowingWorkflow)
    async def observe(ev: StartEvent) -> None:
        seen.append("observed")

    wf = GrowingWorkflow(timeout=5)
    assert set(wf.steps) == {"start", "observe"}
    assert await wf.run() == "done"
    assert seen == ["observed"]


@pytest.mark.asyncio
async def test_free_step_is_inherited_by_subclasses() -> None:
    """A free step attached to a workflow class is also a step of its subclasses."""

    class BaseWorkflow(Workflow):
        @step
        async def start(self, ev: StartEvent) -> Middle:
            return Middle(text="base")

    @step(workflow=BaseWorkflow)
    async def finish(ev: Middle) -> StopEvent:
        return StopEvent(result=ev.text)

    class DerivedWorkflow(BaseWorkflow):
        pass

    wf = DerivedWorkflow(timeout=5)
    assert set(wf.steps) == {"start", "finish"}
    assert await wf.run() == "base"


class StringAnnotatedWorkflow(Workflow):
    """Annotations written as strings, one naming an event class defined further down."""

    @step
    async def begin(self, ctx: "Context[Any]", ev: "StartEvent") -> "DefinedLater":
        return DefinedLater(value=20)

    @step
    async def finish(self, ev: "DefinedLater") -> "StopEvent":
        return StopEvent(result=ev.value + 1)


class DefinedLater(Event):
    value: int


@pytest.mark.asyncio
async def test_string_annotations_are_resolved_including_forward_references() -> None:
    """String annotations work, even naming an event class defined after the workflow."""
    assert await StringAnnotatedWorkflow(timeout=5).run() == 21


@pytest.mark.asyncio
async def test_string_annotations_resolve_function_local_event_classes() -> None:
    """A string annotation can name an event class local to the function defining the workflow."""

    class LocalEvent(Event):
        word: str

    class LocalStringWorkflow(Workflow):
        @step
        async def begin(self, ev: "StartEvent") -> "LocalEvent":
            return LocalEvent(word="local")

        @step
        async def finish(self, ev: "LocalEvent") -> "StopEvent":
            return StopEvent(result=ev.word)

    assert await LocalStringWorkflow(timeout=5).run() == "local"


@pytest.mark.asyncio
async def test_future_annotations_module_workflow_runs() -> None:
    """A workflow in a `from __future__ import annotations` module resolves its annotations."""
    wf = FutureWorkflow(timeout=5)
    assert set(wf.steps) == {"begin", "finish"}
    assert await wf.run(word="hi") == "HI!"


@pytest.mark.asyncio
async def test_future_annotations_with_function_local_events() -> None:
    """Under future annotations, a workflow built in a function resolves the function's locals."""
    workflow_cls = make_local_workflow()
    assert await workflow_cls(timeout=5).run(n=21) == 42


@pytest.mark.asyncio
async def test_ctx_parameter_is_optional_and_may_come_after_the_event() -> None:
    """Steps may omit ctx or take it after the event; the ctx given is the run's context."""
    given: list[Context[Any]] = []

    class CtxWorkflow(Workflow):
        @step
        async def no_ctx(self, ev: StartEvent) -> Middle:
            return Middle(text="a")

        @step
        async def ctx_last(self, ev: Middle, ctx: Context[Any]) -> Done:
            given.append(ctx)
            ctx.write_event_to_stream(Note(text="ctx works"))
            return Done(label=ev.text + "b")

        @step
        async def ctx_first(self, ctx: Context[Any], ev: Done) -> StopEvent:
            given.append(ctx)
            return StopEvent(result=ev.label + "c")

    handler = CtxWorkflow(timeout=5).run()
    streamed = await drain(handler)
    assert await handler == "abc"
    assert [ev.text for ev in streamed if isinstance(ev, Note)] == ["ctx works"]
    assert len(given) == 2
    assert all(c is handler.ctx for c in given)


@pytest.mark.asyncio
async def test_bare_context_annotation_is_accepted() -> None:
    """A step annotated with bare `ctx: Context` (LlamaIndex style) receives the context."""

    class BareContextWorkflow(Workflow):
        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            await ctx.store.set("k", "v")
            return StopEvent(result=await ctx.store.get("k"))

    assert await BareContextWorkflow(timeout=5).run() == "v"


# --- retries -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_step_failing_twice_then_succeeding_completes_with_constant_delay_retries() -> None:
    """The deprecated ConstantDelayRetryPolicy(maximum_attempts=3) still retries to success."""
    attempts: list[float] = []
    with pytest.deprecated_call():
        policy = ConstantDelayRetryPolicy(delay=0.05, maximum_attempts=3)

    class FlakyWorkflow(Workflow):
        @step(retry_policy=policy)
        async def flaky(self, ev: StartEvent) -> StopEvent:
            attempts.append(time.monotonic())
            if len(attempts) < 3:
                msg = f"attempt {len(attempts)} failed"
                raise ConnectionError(msg)
            return StopEvent(result=len(attempts))

    assert await FlakyWorkflow(timeout=5).run() == 3
    assert len(attempts) == 3
    # Two waits of the constant delay separate the first and the last attempt.
    assert attempts[-1] - attempts[0] >= 0.09


@pytest.mark.asyncio
async def test_step_always_failing_raises_original_error_after_maximum_attempts() -> None:
    """A step that always fails runs stop_after_attempt(n) times, then its own error is raised."""
    raised: list[Exception] = []

    class DoomedWorkflow(Workflow):
        @step(retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(3)))
        async def doomed(self, ev: StartEvent) -> StopEvent:
            err = ConnectionError(f"attempt {len(raised) + 1} failed")
            raised.append(err)
            raise err

    with pytest.raises(ConnectionError, match="attempt 3 failed") as info:
        await DoomedWorkflow(timeout=5).run()
    assert len(raised) == 3
    assert info.value is raised[-1]


@pytest.mark.asyncio
async def test_step_without_retry_policy_is_attempted_once() -> None:
    """Without a retry policy a failing step runs once and its error ends the run."""
    calls = 0

    class OnceWorkflow(Workflow):
        @step
        async def once(self, ev: StartEvent) -> StopEvent:
            nonlocal calls
            calls += 1
            msg = "no retry"
            raise ValueError(msg)

    with pytest.raises(ValueError, match="no retry"):
        await OnceWorkflow(timeout=5).run()
    assert calls == 1


@pytest.mark.asyncio
async def test_retry_policy_applies_to_sync_steps() -> None:
    """A plain `def` step is retried by its retry policy too."""
    calls = 0

    class SyncFlakyWorkflow(Workflow):
        @step(retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(2)))
        def flaky(self, ev: StartEvent) -> StopEvent:
            nonlocal calls
            calls += 1
            if calls == 1:
                msg = "first call fails"
                raise OSError(msg)
            return StopEvent(result=calls)

    assert await SyncFlakyWorkflow(timeout=5).run() == 2


class RecordingPolicy:
    """A custom retry policy: retries ValueError immediately up to `limit` attempts."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.calls: list[tuple[float, int, Exception]] = []

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        """Return 0 (retry now) for a ValueError while attempts < limit, else None."""
        self.calls.append((elapsed_time, attempts, error))
        if isinstance(error, ValueError) and attempts < self.limit:
            return 0.0
        return None


def test_custom_policy_satisfies_the_retry_policy_protocol() -> None:
    """An object with a next(elapsed_time, attempts, error) method is a RetryPolicy."""
    assert isinstance(RecordingPolicy(1), RetryPolicy)
    assert isinstance(retry_policy(), RetryPolicy)
    assert not isinstance(object(), RetryPolicy)


@pytest.mark.asyncio
async def test_custom_retry_policy_is_consulted_after_each_failure() -> None:
    """A custom RetryPolicy gets elapsed time, attempt count and the error after each failure."""
    policy = RecordingPolicy(limit=4)
    raised: list[Exception] = []

    class CustomRetryWorkflow(Workflow):
        @step(retry_policy=policy)
        async def always_fails(self, ev: StartEvent) -> StopEvent:
            err = ValueError(f"failure {len(raised) + 1}")
            raised.append(err)
            raise err

    with pytest.raises(ValueError, match="failure 4"):
        await CustomRetryWorkflow(timeout=5).run()
    assert len(raised) == 4
    assert [attempts for _, attempts, _ in policy.calls] == [1, 2, 3, 4]
    assert [error for _, _, error in policy.calls] == raised
    elapsed = [t for t, _, _ in policy.calls]
    assert elapsed[0] >= 0
    assert elapsed == sorted(elapsed)


@pytest.mark.parametrize(
    ("error_type", "expected_calls"),
    [
        pytest.param(ValueError, 2, id="retried-error-then-success"),
        pytest.param(KeyError, 1, id="policy-gives-up-at-once"),
    ],
)
@pytest.mark.asyncio
async def test_custom_retry_policy_decides_per_error(
    error_type: type[Exception], expected_calls: int
) -> None:
    """Returning a delay retries the step; returning None gives up and raises the error."""
    calls = 0

    class DecidingWorkflow(Workflow):
        @step(retry_policy=RecordingPolicy(limit=3))
        async def flaky(self, ev: StartEvent) -> StopEvent:
            nonlocal calls
            calls += 1
            if calls == 1:
                msg = "first call fails"
                raise error_type(msg)
            return StopEvent(result="recovered")

    if error_type is ValueError:
        assert await DecidingWorkflow(timeout=5).run() == "recovered"
    else:
        with pytest.raises(error_type, match="first call fails"):
            await DecidingWorkflow(timeout=5).run()
    assert calls == expected_calls
