"""Cancellation and timeouts at every await point a run can be parked at.

Each scenario parks a run at one await point — a ``wait_for_event``, a retry delay, a
``collect_events`` join waiting for more events, a lock around the typed state, a plain
``def`` step in its worker thread, a step sleeping while the caller is parked in
``async for`` — and ends it there with ``cancel_run()`` or with the workflow timeout. A
reader task is parked in ``stream_events()`` throughout. Each ends promptly with the
documented terminal event and error, every span ended exactly once, no run left active.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import BaseModel

from _helpers import A
from _helpers import B
from _helpers import FansOut
from _helpers import assert_ended
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowCancelledEvent
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowHandler
from stepstream import WorkflowRuntimeError
from stepstream import WorkflowTimedOutEvent
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

#: The workflow timeout used by the timeout variant of each scenario.
RUN_TIMEOUT = 0.3
#: How soon after cancel_run() (or after the timeout) the outcome must be known.
PROMPT = 0.5


# -- scenarios --------------------------------------------------------------------------------


class Note(Event):
    text: str


class Counted(BaseModel):
    n: int = 0


@dataclass
class Scenario:
    """A workflow parked at one await point once ``reached`` is set."""

    workflow: Workflow
    reached: asyncio.Event
    # Steps named as still active when the run times out there.
    active: list[str]
    # Called after the outcome, to let background work (a worker thread) finish.
    settle: Callable[[], None] = lambda: None


def parked_in_wait_for_event(timeout: float) -> Scenario:
    """A step suspended in ctx.wait_for_event for an answer that never comes."""
    reached = asyncio.Event()

    class Asks(Workflow):
        @step
        async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            reached.set()
            answer = await ctx.wait_for_event(
                HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
            )
            return StopEvent(result=answer["response"])

    return Scenario(Asks(timeout=timeout), reached, ["ask"])


def parked_in_retry_delay(timeout: float) -> Scenario:
    """A failed step waiting out a 5 s retry delay."""
    reached = asyncio.Event()

    class Retries(Workflow):
        @step(retry_policy=retry_policy(wait=wait_fixed(5), stop=stop_after_attempt(3)))
        async def flaky(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            reached.set()
            msg = "transient"
            raise ConnectionError(msg)

    return Scenario(Retries(timeout=timeout), reached, ["flaky"])


def parked_in_idle_join(timeout: float) -> Scenario:
    """A collect_events join that got A and one B and waits for a second B; no step runs."""
    reached = asyncio.Event()

    class Joins(FansOut):
        @step
        async def join(self, ctx: Context[Any], ev: A | B) -> StopEvent | None:
            got = ctx.collect_events(ev, [A, B, B])
            if isinstance(ev, B):
                reached.set()
            return None if got is None else StopEvent()

    return Scenario(Joins(timeout=timeout), reached, [])


def parked_in_join_with_slow_producer(timeout: float) -> Scenario:
    """A collect_events join waiting for the B a sleeping producer will never send."""
    reached = asyncio.Event()

    class JoinsSlow(Workflow):
        @step
        async def fan_out(self, ctx: Context[Any], ev: StartEvent) -> A | Note | None:
            ctx.send_event(A())
            ctx.send_event(Note(text="go"))
            return None

        @step
        async def slow_producer(self, ctx: Context[Any], ev: Note) -> B:
            reached.set()
            await asyncio.sleep(60)
            return B()

        @step
        async def join(self, ctx: Context[Any], ev: A | B) -> StopEvent | None:
            return None if ctx.collect_events(ev, [A, B]) is None else StopEvent()

    return Scenario(JoinsSlow(timeout=timeout), reached, ["slow_producer"])


def parked_on_state_lock(timeout: float) -> Scenario:
    """One step holds the typed-state lock while sleeping; another waits for the lock."""
    reached = asyncio.Event()

    class Locks(FansOut):
        @step
        async def holder(self, ctx: Context[Counted], ev: A) -> StopEvent:
            async with ctx.store.edit_state() as state:
                state.n += 1
                await asyncio.sleep(60)
            return StopEvent()

        @step
        async def waiter(self, ctx: Context[Counted], ev: B) -> StopEvent:
            await asyncio.sleep(0.01)
            reached.set()
            async with ctx.store.edit_state() as state:
                state.n += 1
            return StopEvent()

    return Scenario(Locks(timeout=timeout), reached, ["holder", "waiter"])


def parked_in_worker_thread(timeout: float) -> Scenario:
    """A plain def step blocking its worker thread for 0.6 s (a thread cannot be cancelled)."""
    reached = asyncio.Event()
    loop = asyncio.get_running_loop()
    done = threading.Event()

    class Blocks(Workflow):
        @step
        def blocking(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            loop.call_soon_threadsafe(reached.set)
            time.sleep(0.6)
            ctx.write_event_to_stream(Note(text="after the end"))  # dropped: the run ended
            done.set()
            return StopEvent(result="too late")

    def settle() -> None:
        assert done.wait(5)

    return Scenario(Blocks(timeout=timeout), reached, ["blocking"], settle)


def parked_while_reader_waits(timeout: float) -> Scenario:
    """A step sleeping after one streamed event, while the reader waits for the next."""
    reached = asyncio.Event()

    class Sleeps(Workflow):
        @step
        async def sleeper(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Note(text="first"))
            reached.set()
            await asyncio.sleep(60)
            return StopEvent()

    return Scenario(Sleeps(timeout=timeout), reached, ["sleeper"])


SCENARIOS = {
    "wait_for_event": parked_in_wait_for_event,
    "retry_delay": parked_in_retry_delay,
    "collect_events_join_idle": parked_in_idle_join,
    "collect_events_join_with_producer": parked_in_join_with_slow_producer,
    "state_lock": parked_on_state_lock,
    "sync_step_thread": parked_in_worker_thread,
    "reader_parked_in_async_for": parked_while_reader_waits,
}


class AsksBriefly(Workflow):
    """Waits 0.1 s in wait_for_event for a HumanResponseEvent nobody sends."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(HumanResponseEvent, timeout=0.1)
        return StopEvent(result=answer["response"])


async def read_all(handler: WorkflowHandler) -> list[Event]:
    """Read the whole stream (the reader parks in `async for` between events)."""
    async with asyncio.timeout(10):
        return [ev async for ev in handler.stream_events()]


async def wait_for_reader(reader: asyncio.Task[list[Event]]) -> list[Event]:
    """The reader's events, failing unless it finished promptly."""
    async with asyncio.timeout(PROMPT):
        return await reader


# -- tests --------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.asyncio
async def test_cancel_run_at_await_point(tel: CapturedTelemetry, scenario: str) -> None:
    """cancel_run() at this await point ends the run at once with WorkflowCancelledEvent."""
    parked = SCENARIOS[scenario](30)
    handler = parked.workflow.run()
    reader = asyncio.create_task(read_all(handler))
    async with asyncio.timeout(5):
        await parked.reached.wait()
    await asyncio.sleep(0.05)  # let the run settle at the await point
    assert not handler.done()
    before = time.monotonic()
    async with asyncio.timeout(PROMPT):
        await handler.cancel_run()
    assert handler.done()
    streamed = await wait_for_reader(reader)
    assert time.monotonic() - before < PROMPT
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowCancelledEvent)
    assert terminal.message == "the run was cancelled with cancel_run()"
    with pytest.raises(WorkflowCancelledError, match=r"cancelled with cancel_run\(\)"):
        await handler
    parked.settle()
    await asyncio.sleep(0.05)  # the worker thread's late write hops to the loop first
    assert not any(isinstance(ev, Note) and ev.text == "after the end" for ev in streamed)
    # The stream was read before the late write: telemetry, which records every
    # accepted write, shows whether it was accepted afterwards.
    assert not [line for line in tel.lines(attrs.LOG_STREAM_EVENT) if "after the end" in str(line)]
    assert_ended(tel, "cancelled")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.asyncio
async def test_run_timeout_at_await_point(tel: CapturedTelemetry, scenario: str) -> None:
    """The workflow timeout at this await point ends the run with WorkflowTimedOutEvent."""
    parked = SCENARIOS[scenario](RUN_TIMEOUT)
    started = time.monotonic()
    handler = parked.workflow.run()
    reader = asyncio.create_task(read_all(handler))
    async with asyncio.timeout(RUN_TIMEOUT + PROMPT):
        await parked.reached.wait()
        streamed = await reader
    assert RUN_TIMEOUT <= time.monotonic() - started < RUN_TIMEOUT + PROMPT
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowTimedOutEvent)
    assert sorted(terminal.active_steps) == parked.active
    name = type(parked.workflow).__name__
    active = ", ".join(terminal.active_steps) or "none"
    message = (
        f"workflow {name} timed out after {RUN_TIMEOUT}s; steps still active: {active}. "
        "Raise Workflow(timeout=...) or pass timeout=None"
    )
    assert terminal.message == message
    with pytest.raises(WorkflowTimeoutError) as raised:
        await handler
    assert str(raised.value) == message
    assert sorted(raised.value.active_steps) == parked.active
    parked.settle()
    assert_ended(tel, "timeout")


@pytest.mark.asyncio
async def test_wait_for_event_timeout_fails_the_run(tel: CapturedTelemetry) -> None:
    """wait_for_event(timeout=0.1) with no answer fails the run with WorkflowTimeoutError."""
    started = time.monotonic()
    handler = AsksBriefly(timeout=30).run()
    streamed = await read_all(handler)
    assert time.monotonic() - started < 0.1 + PROMPT
    expected = (
        "step 'ask' waited 0.1s for HumanResponseEvent and none arrived; send it with "
        "ctx.send_event(...) or raise the timeout"
    )
    with pytest.raises(WorkflowTimeoutError) as raised:
        await handler
    assert str(raised.value) == expected
    terminal = streamed[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert (terminal.step, terminal.exception_type) == ("ask", "WorkflowTimeoutError")
    assert_ended(tel, "error")


@pytest.mark.asyncio
async def test_answer_after_cancel_is_rejected_and_changes_nothing(tel: CapturedTelemetry) -> None:
    """Sending the awaited answer after cancel_run() cannot resurrect the run."""
    parked = parked_in_wait_for_event(30)
    handler = parked.workflow.run()
    async with asyncio.timeout(5):
        await parked.reached.wait()
    await asyncio.sleep(0.02)
    await handler.cancel_run()
    # The waiter is gone with the run: the answer has nowhere to go.
    with pytest.raises(WorkflowRuntimeError, match="has ended, so nothing can receive it"):
        handler.ctx.send_event(HumanResponseEvent(response="too late"))
    with pytest.raises(WorkflowCancelledError):
        await handler
    streamed = await read_all(handler)
    assert [type(ev) for ev in streamed] == [InputRequiredEvent, WorkflowCancelledEvent]
    assert tel.spans
    assert tel.all_spans_ended_once()
