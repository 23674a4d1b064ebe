"""The Context members ported from LlamaIndex Workflows, and retry policies seen from a run.

``ctx.retry_info()``, seeded and raising retry policies, ``Context.get_step_context()``,
``ctx.is_running``, ``ctx.running_steps()``, the deprecated ``ctx.get_result()``,
``write_event_to_stream(None)``, ``collect_events(..., buffer_id=)`` and a Context
used before its run, through the public API.
"""

import hashlib
import re
from datetime import timedelta
from typing import Any
from typing import cast

import pytest

from _helpers import A
from _helpers import B
from _helpers import BoomError
from _helpers import FansOut
from _helpers import raise_next
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowHandler
from stepstream import step
from stepstream.errors import ContextStateError
from stepstream.errors import WorkflowRuntimeError
from stepstream.retry_policy import RetryInfo
from stepstream.retry_policy import RetryPolicy
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed


class PolicyBrokeError(Exception):
    pass


class Progress(Event):
    n: int


def peer_seed(run_id: str, step_name: str, failures: int) -> int:
    """The seed LlamaIndex Workflows gives a policy: sha256 of run id, step and failures."""
    digest = hashlib.sha256(f"{run_id}:{step_name}:{failures}".encode()).hexdigest()
    return int(digest, 16) & 0xFFFFFFFF


def is_aware_utc(moment: Any) -> bool:
    """Tell whether ``moment`` is a datetime carrying a timezone whose offset is zero."""
    return moment is not None and moment.utcoffset() == timedelta(0)


# -- ctx.retry_info() ----------------------------------------------------------------------


class RetriedOnce(Workflow):
    """``work`` fails its first attempt and succeeds on the retry, recording retry_info()."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.infos: list[RetryInfo] = []
        self.raised: list[BoomError] = []

    @step(retry_policy=retry_policy(wait=wait_fixed(0.01), stop=stop_after_attempt(2)))
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        self.infos.append(ctx.retry_info())
        if not self.raised:
            raise_next(self.raised)
        return StopEvent(result="done")


@pytest.mark.asyncio
async def test_retry_info_describes_the_previous_failure_on_a_retry() -> None:
    """The first attempt sees RetryInfo(0, 0.0, None, None); the retry sees the failure."""
    wf = RetriedOnce()
    assert await wf.run() == "done"
    first, second = wf.infos
    assert first == RetryInfo(0, 0.0, None, None)
    assert second.retry_number == 1
    assert second.last_exception is wf.raised[0]
    assert is_aware_utc(second.last_failed_at)
    assert second.elapsed_seconds > 0


@pytest.mark.asyncio
async def test_retry_info_outside_a_step_raises_context_state_error() -> None:
    """retry_info() on handler.ctx, during the run and after it, raises ContextStateError."""
    handler = Parked().run()
    await until_input_required(handler)
    with pytest.raises(ContextStateError) as during:
        handler.ctx.retry_info()
    assert str(during.value) == "retry_info is only available from within step functions"
    await answer(handler)
    with pytest.raises(ContextStateError) as after:
        handler.ctx.retry_info()
    assert str(after.value) == "retry_info is only available from within step functions"


# -- retry policies: the seed, and a policy that raises ------------------------------------


class SeedRecorder:
    """A policy whose next() takes seed: retries twice at once, recording each seed."""

    def __init__(self) -> None:
        self.seeds: list[int | None] = []

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        self.seeds.append(seed)
        return 0.0 if attempts < 3 else None


class Seedless:
    """A policy whose next() has no seed parameter: retries twice at once."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def next(self, elapsed_time: float, attempts: int, error: Exception) -> float | None:
        self.calls.append(attempts)
        return 0.0 if attempts < 3 else None


class RaisingPolicy:
    """A policy whose next() itself fails."""

    def next(
        self, elapsed_time: float, attempts: int, error: Exception, *, seed: int | None = None
    ) -> float | None:
        msg = f"policy broke on {error}"
        raise PolicyBrokeError(msg)


def always_failing(policy: RetryPolicy) -> tuple[Workflow, list[BoomError]]:
    """A workflow whose one step ``work`` (retried by ``policy``) always fails, and its errors."""
    raised: list[BoomError] = []

    class AlwaysFailing(Workflow):
        @step(retry_policy=policy)
        async def work(self, ev: StartEvent) -> StopEvent:
            raise_next(raised)

    return AlwaysFailing(timeout=5), raised


@pytest.mark.asyncio
async def test_a_policy_taking_seed_gets_the_peers_replay_stable_seed() -> None:
    """next(seed=) gets sha256(run_id:step:failures) & 0xFFFFFFFF: same per run id, new per try."""
    seeds = []
    for run_id in ("fixed", "fixed", "other"):
        policy = SeedRecorder()
        wf, raised = always_failing(policy)
        with pytest.raises(BoomError) as info:
            await wf.run(run_id=run_id)
        assert str(info.value) == "boom 3"
        assert len(raised) == 3
        assert all(type(s) is int for s in policy.seeds)
        assert policy.seeds == [peer_seed(run_id, "work", n) for n in (1, 2, 3)]
        seeds.append(policy.seeds)
    fixed, again, other = seeds
    assert fixed == again
    assert len(set(fixed)) == 3
    assert other != fixed


@pytest.mark.asyncio
async def test_a_policy_without_a_seed_parameter_still_works() -> None:
    """A next() without seed is called without it, and its decisions are followed."""
    policy = Seedless()
    # The RetryPolicy protocol declares seed; the run checks next()'s signature instead.
    wf, raised = always_failing(cast("RetryPolicy", policy))
    with pytest.raises(BoomError) as info:
        await wf.run(run_id="fixed")
    assert info.value is raised[-1]
    assert policy.calls == [1, 2, 3]
    assert len(raised) == 3


@pytest.mark.asyncio
async def test_a_policy_that_raises_fails_the_run_with_its_error_caused_by_the_steps() -> None:
    """A raising next() stops the retries: the run fails with it, its __cause__ the step's error."""
    wf, raised = always_failing(RaisingPolicy())
    with pytest.raises(PolicyBrokeError) as info:
        await wf.run()
    assert str(info.value) == "policy broke on boom 1"
    assert len(raised) == 1
    assert info.value.__cause__ is raised[0]


# -- Context.get_step_context() ------------------------------------------------------------


def helper_context() -> Context[Any]:
    """What a helper called by a step (which has no ctx parameter) finds."""
    return Context.get_step_context()


class NoCtxParameter(Workflow):
    """Steps without a ctx parameter, async and sync, ask for their Context."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.found: list[Context[Any]] = []

    @step
    async def start(self, ev: StartEvent) -> Progress:
        self.found.append(Context.get_step_context())
        self.found.append(helper_context())
        return Progress(n=1)

    @step
    def finish(self, ev: Progress) -> StopEvent:
        self.found.append(helper_context())
        return StopEvent(result="done")


@pytest.mark.asyncio
async def test_get_step_context_returns_the_running_steps_context() -> None:
    """Inside a step, and a helper it calls (also from a sync step), it is handler.ctx."""
    wf = NoCtxParameter()
    handler = wf.run()
    assert await handler == "done"
    assert len(wf.found) == 3
    assert all(found is handler.ctx for found in wf.found)


def test_get_step_context_outside_a_step_raises() -> None:
    """Outside a step function there is no step Context: WorkflowRuntimeError."""
    with pytest.raises(WorkflowRuntimeError) as info:
        Context.get_step_context()
    assert str(info.value) == (
        "Context.get_step_context() may only be called from within a step function"
    )


# -- a run that waits: is_running, running_steps(), get_result() ------------------------------


class Parked(Workflow):
    """``park`` asks for input and waits for the answer."""

    def __init__(self) -> None:
        super().__init__(timeout=5)

    @step
    async def park(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        reply = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(), timeout=5
        )
        return StopEvent(result=reply.get("response"))


async def until_input_required(handler: WorkflowHandler) -> None:
    """Read the stream until the run asks for input (its step then waits)."""
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            return
    pytest.fail("the run ended without asking for input")


async def answer(handler: WorkflowHandler) -> None:
    """Send the answer and wait for the run to end with it."""
    handler.ctx.send_event(HumanResponseEvent(response="yes"))
    assert await handler == "yes"


@pytest.mark.asyncio
async def test_is_running_is_false_before_true_during_and_false_after_the_run() -> None:
    """A fresh Context(wf) is not running; handler.ctx is while the run waits, not after."""
    wf = Parked()
    ctx: Context[Any] = Context(wf)
    assert ctx.is_running is False
    handler = wf.run(ctx=ctx)
    assert handler.ctx is ctx
    await until_input_required(handler)
    assert handler.ctx.is_running is True
    await answer(handler)
    assert handler.ctx.is_running is False


@pytest.mark.asyncio
async def test_running_steps_lists_the_waiting_step() -> None:
    """await handler.ctx.running_steps() names the step that waits for an event."""
    handler = Parked().run()
    await until_input_required(handler)
    assert await handler.ctx.running_steps() == ["park"]
    await answer(handler)


GET_RESULT_DEPRECATED = (
    "Context.get_result() is deprecated and will be removed in a future release. Prefer "
    "awaiting the WorkflowHandler returned by Workflow.run: "
    "`result = await workflow.run(..., ctx=ctx)`."
)


@pytest.mark.asyncio
async def test_get_result_warns_and_raises_before_the_end_then_returns_the_result() -> None:
    """get_result() is deprecated; it raises while the run waits and returns its result after."""
    handler = Parked().run(run_id="parked-run")
    await until_input_required(handler)
    with (
        pytest.raises(WorkflowRuntimeError) as info,
        pytest.warns(DeprecationWarning, match=f"^{re.escape(GET_RESULT_DEPRECATED)}$"),
    ):
        handler.ctx.get_result()
    assert str(info.value) == "Workflow run with run_id parked-run is not complete"
    await answer(handler)
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(GET_RESULT_DEPRECATED)}$"):
        result = handler.ctx.get_result()
    assert result == "yes"


class Finished(StopEvent):
    score: int


class EndsWithASubclass(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Finished:
        return Finished(score=3)


@pytest.mark.asyncio
async def test_get_result_returns_a_stop_event_subclass_itself() -> None:
    """After a run that ended with a StopEvent subclass, get_result() returns that event."""
    handler = EndsWithASubclass().run()
    finished = await handler
    assert isinstance(finished, Finished)
    with pytest.warns(DeprecationWarning, match=f"^{re.escape(GET_RESULT_DEPRECATED)}$"):
        result = handler.ctx.get_result()
    assert result is finished


# -- write_event_to_stream(None), collect_events(buffer_id=) ---------------------------------


class Streaming(Workflow):
    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(None)
        ctx.write_event_to_stream(Progress(n=1))
        ctx.write_event_to_stream(None)
        return StopEvent(result="done")


@pytest.mark.asyncio
async def test_write_event_to_stream_ignores_none() -> None:
    """None written to the stream is dropped; the events around it are streamed."""
    handler = Streaming().run()
    streamed = [ev async for ev in handler.stream_events()]
    assert [type(ev).__name__ for ev in streamed] == ["Progress", "StopEvent"]
    assert await handler == "done"


class Joining(FansOut):
    """The start step sends an A then a B; ``join`` collects them as [B, A]."""

    def __init__(self, buffer_id: str | None) -> None:
        super().__init__(timeout=5)
        self.buffer_id = buffer_id
        self.pending: list[None] = []

    @step
    async def join(self, ctx: Context[Any], ev: A | B) -> StopEvent | None:
        events = ctx.collect_events(ev, [B, A], buffer_id=self.buffer_id)
        if events is None:
            self.pending.append(None)
            return None
        return StopEvent(result=[type(e).__name__ for e in events])


@pytest.mark.asyncio
@pytest.mark.parametrize("buffer_id", [None, "x"])
async def test_collect_events_with_a_buffer_id_works_as_without(buffer_id: str | None) -> None:
    """collect_events(ev, [B, A], buffer_id='x') joins as it does without buffer_id."""
    wf = Joining(buffer_id)
    assert await wf.run() == ["B", "A"]
    assert wf.pending == [None]


# -- a Context before its run --------------------------------------------------------------


def test_send_event_before_the_run_raises_context_state_error() -> None:
    """send_event on a Context(wf) that has not run yet raises ContextStateError."""
    ctx: Context[Any] = Context(Parked())
    with pytest.raises(ContextStateError) as info:
        ctx.send_event(HumanResponseEvent(response="early"))
    assert str(info.value) == (
        "send_event() called before the workflow started; call workflow.run(ctx=ctx) first"
    )
