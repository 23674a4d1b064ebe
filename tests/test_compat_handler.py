"""The handler's LlamaIndex-compatible API, internal events, and answers held for waiters."""

import asyncio
from typing import Any

import pytest

from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowCancelledEvent
from stepstream import step
from stepstream.events import StepState
from stepstream.events import StepStateChanged
from stepstream.events import UnhandledEvent
from stepstream.events import WorkflowIdleEvent


class BoomError(Exception):
    pass


class Done(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("value", 1))


class Fails(Workflow):
    @step
    async def start(self, ev: StartEvent) -> StopEvent:
        raise BoomError("boom")


class Asks(Workflow):
    """Asks once, answers with the response."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
        )
        return StopEvent(result=answer.get("response"))


class Second(Event):
    pass


class Busy(Workflow):
    """Two events for a one-worker step: the second is queued."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Second | None:
        ctx.send_event(Second())
        ctx.send_event(Second())
        return None

    @step(num_workers=1)
    async def second(self, ctx: Context[Any], ev: Second) -> StopEvent | None:
        await asyncio.sleep(0.01)
        if ctx.collect_events(ev, [Second, Second]) is None:
            return None
        return StopEvent(result="both")


@pytest.mark.asyncio
async def test_handler_state_after_success() -> None:
    """After success: is_done, the stop event, its result, no exception, not cancelled."""
    handler = Done().run(value=7)
    assert not handler.is_done()
    assert handler.get_stop_event() is None
    stop = await handler.stop_event_result()
    assert type(stop) is StopEvent
    assert stop.result == 7
    assert await handler == 7
    assert handler.is_done()
    assert handler.get_stop_event() is stop
    assert handler.exception() is None
    assert not handler.cancelled()
    assert str(handler) == (
        f"WorkflowHandler(workflow=Done, run_id={handler.run_id}, result={stop!r})"
    )


@pytest.mark.asyncio
async def test_handler_state_after_failure() -> None:
    """After a failure: no stop event, the step's exception, raised by stop_event_result."""
    handler = Fails().run()
    with pytest.raises(BoomError, match="boom"):
        await handler.stop_event_result()
    assert handler.get_stop_event() is None
    assert isinstance(handler.exception(), BoomError)
    assert not handler.cancelled()


@pytest.mark.asyncio
async def test_handler_state_after_cancel_run() -> None:
    """After cancel_run(timeout=...): cancelled, the stop event is WorkflowCancelledEvent."""
    handler = Asks().run()
    await asyncio.sleep(0.01)
    await handler.cancel_run(timeout=1.0)
    assert handler.cancelled()
    assert isinstance(handler.get_stop_event(), WorkflowCancelledEvent)
    assert isinstance(handler.exception(), WorkflowCancelledError)
    with pytest.raises(WorkflowCancelledError):
        await handler


@pytest.mark.asyncio
async def test_handler_send_event_answers_a_waiter() -> None:
    """await handler.send_event(...) delivers like ctx.send_event."""
    handler = Asks().run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            await handler.send_event(HumanResponseEvent(response="Ada"))
    assert await handler == "Ada"


@pytest.mark.asyncio
async def test_an_answer_sent_before_the_wait_is_held_for_it() -> None:
    """The caller's answer sent before the step waits is held and taken by the waiter."""
    handler = Asks().run()
    handler.ctx.send_event(HumanResponseEvent(response="early"))
    assert await handler == "early"


@pytest.mark.asyncio
async def test_a_held_event_nobody_waits_for_is_reported_at_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An event held for a waiter that never comes is named in a warning when the run ends."""
    handler = Done().run()
    handler.ctx.send_event(HumanResponseEvent(response="unused"))
    await handler
    expected = (
        f"stepstream: run {handler.run_id} of Done ended with 1 event(s) sent by the caller "
        "that no step took and no wait_for_event matched: HumanResponseEvent"
    )
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [expected]


@pytest.mark.asyncio
async def test_internal_events_are_hidden_by_default() -> None:
    """stream_events() without expose_internal yields no internal event."""
    handler = Busy().run()
    events = [ev async for ev in handler.stream_events()]
    assert [type(ev) for ev in events] == [StopEvent]


@pytest.mark.asyncio
async def test_step_state_changes_are_streamed_with_expose_internal() -> None:
    """Each invocation streams RUNNING then NOT_RUNNING; a queued one PREPARING first."""
    handler = Busy().run()
    events = [ev async for ev in handler.stream_events(expose_internal=True)]
    changes = [ev for ev in events if isinstance(ev, StepStateChanged)]
    assert [(c.name, c.step_state) for c in changes] == [
        ("start", StepState.RUNNING),
        ("second", StepState.PREPARING),
        ("start", StepState.NOT_RUNNING),
        ("second", StepState.RUNNING),
        ("second", StepState.NOT_RUNNING),
        ("second", StepState.RUNNING),
        ("second", StepState.NOT_RUNNING),
    ]
    first = changes[0]
    assert (first.worker_id, first.input_event_name, first.output_event_name) == (
        "0",
        "StartEvent",
        None,
    )
    assert changes[1].worker_id == "<enqueued>"
    end = changes[-1]
    assert end.input_event_name == str(Second)
    assert end.output_event_name == str(StopEvent)
    assert type(events[-1]) is StopEvent


@pytest.mark.asyncio
async def test_idle_and_unhandled_events_with_expose_internal() -> None:
    """A run waiting for the caller streams WorkflowIdleEvent; a held event UnhandledEvent."""
    handler = Asks().run()
    seen: list[Event] = []
    async for ev in handler.stream_events(expose_internal=True):
        seen.append(ev)
        if isinstance(ev, WorkflowIdleEvent):
            handler.ctx.send_event(Second())  # nobody takes it: held
            handler.ctx.send_event(HumanResponseEvent(response="x"))
    assert await handler == "x"
    idle = [ev for ev in seen if isinstance(ev, WorkflowIdleEvent)]
    unhandled = [ev for ev in seen if isinstance(ev, UnhandledEvent)]
    assert len(idle) == 1
    assert [(u.event_type, u.qualified_name, u.idle) for u in unhandled] == [
        ("Second", f"{__name__}.Second", True)
    ]
