"""Workflow(stream_limit=..., stream_overflow=...): a bound on a run's unread stream.

Without a bound (the default) every unread event is kept. With one, a caller that does
not keep up either fails the run with a clear error ("fail") or loses the oldest unread
events to one EventsDroppedEvent marker per gap ("drop_oldest"); telemetry records
every event either way.
"""

import asyncio
import time
from typing import Any

import pytest

from _helpers import assert_ended
from _helpers import drain
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowFailedEvent
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.errors import WorkflowRuntimeError
from stepstream.errors import WorkflowStreamOverflowError
from stepstream.events import EventsDroppedEvent
from stepstream.events import StepStateChanged
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry


class Tick(Event):
    n: int


class Count(StartEvent):
    count: int


class Writes(Workflow):
    """Writes ``count`` Tick events, then stops."""

    @step
    async def write(self, ctx: Context[Any], ev: Count) -> StopEvent:
        for n in range(ev.count):
            ctx.write_event_to_stream(Tick(n=n))
        return StopEvent(result="done")


class WritesFromThread(Workflow):
    """A plain def step (run in a worker thread) writing ``count`` Tick events."""

    @step
    def write(self, ctx: Context[Any], ev: Count) -> StopEvent:
        for n in range(ev.count):
            ctx.write_event_to_stream(Tick(n=n))
        time.sleep(0.05)  # the writes hop to the loop before the step returns
        return StopEvent(result="done")


class AsksBetween(Workflow):
    """Five ticks, a question, five more ticks after the answer."""

    @step
    async def talk(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for n in range(5):
            ctx.write_event_to_stream(Tick(n=n))
        await ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(), timeout=5)
        for n in range(10, 15):
            ctx.write_event_to_stream(Tick(n=n))
        return StopEvent(result="done")


class AsksByReturning(Workflow):
    """Three ticks, then a returned InputRequiredEvent (streamed by the runtime)."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> InputRequiredEvent:
        for n in range(3):
            ctx.write_event_to_stream(Tick(n=n))
        return InputRequiredEvent()

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result="answered")


def shown(events: list[Event]) -> list[Any]:
    """Ticks as their number, gap markers as ("gap", dropped), others by class name."""
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, Tick):
            out.append(ev.n)
        elif isinstance(ev, EventsDroppedEvent):
            out.append(("gap", ev.dropped, ev.stream_limit))
        else:
            out.append(type(ev).__name__)
    return out


def overflow_message(run_id: str, workflow: str, limit: int) -> str:
    return (
        f"run {run_id} of workflow {workflow}: {limit} streamed events are unread, the "
        f"bound set by Workflow(stream_limit={limit}); read handler.stream_events() while "
        "the run goes, raise stream_limit, or pass stream_overflow='drop_oldest' to drop "
        "the oldest unread events"
    )


@pytest.mark.asyncio
async def test_without_a_bound_every_unread_event_is_kept() -> None:
    handler = Writes(timeout=10).run(count=5000)
    assert await handler == "done"
    events = await drain(handler)
    assert shown(events) == [*range(5000), "StopEvent"]


@pytest.mark.asyncio
async def test_drop_oldest_keeps_the_newest_behind_one_marker(tel: CapturedTelemetry) -> None:
    handler = Writes(timeout=10, stream_limit=10, stream_overflow="drop_oldest").run(count=100)
    assert await handler == "done"
    events = await drain(handler)
    assert shown(events) == [("gap", 90, 10), *range(90, 100), "StopEvent"]
    # Telemetry still records every event, in order, with its seq.
    lines = tel.lines(attrs.LOG_STREAM_EVENT)
    assert [line[attrs.KEY_SEQ] for line in lines] == list(range(101))
    assert_ended(tel, "ok")


@pytest.mark.asyncio
async def test_drop_oldest_marks_each_gap_where_it_happened() -> None:
    handler = AsksBetween(timeout=10, stream_limit=3, stream_overflow="drop_oldest").run()
    seen: list[Event] = []
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            seen.append(ev)
            if isinstance(ev, InputRequiredEvent):
                handler.ctx.send_event(HumanResponseEvent(response="go"))
    assert await handler == "done"
    assert shown(seen) == [
        ("gap", 3, 3),
        3,
        4,
        "InputRequiredEvent",
        ("gap", 2, 3),
        12,
        13,
        14,
        "StopEvent",
    ]


@pytest.mark.asyncio
async def test_fail_ends_the_run_with_a_clear_error_and_keeps_what_was_streamed(
    tel: CapturedTelemetry,
) -> None:
    handler = Writes(timeout=10, stream_limit=5).run(count=20)
    with pytest.raises(WorkflowStreamOverflowError) as raised:
        await handler
    assert str(raised.value) == overflow_message(handler.run_id, "Writes", 5)
    assert isinstance(raised.value, WorkflowRuntimeError)
    events = await drain(handler)
    assert shown(events)[:5] == [0, 1, 2, 3, 4]
    terminal = events[-1]
    assert isinstance(terminal, WorkflowFailedEvent)
    assert terminal.step_name == "write"
    assert len(events) == 6
    assert_ended(tel, "error")


@pytest.mark.asyncio
async def test_fail_from_a_worker_thread_fails_the_run() -> None:
    handler = WritesFromThread(timeout=10, stream_limit=4).run(count=10)
    with pytest.raises(WorkflowStreamOverflowError, match=r"stream_limit=4\)"):
        await handler
    events = await drain(handler)
    assert shown(events)[:4] == [0, 1, 2, 3]
    assert isinstance(events[-1], WorkflowFailedEvent)


@pytest.mark.asyncio
async def test_fail_on_a_returned_input_required_event_fails_the_run() -> None:
    handler = AsksByReturning(timeout=10, stream_limit=3).run()
    with pytest.raises(WorkflowStreamOverflowError):
        await handler
    events = await drain(handler)
    assert shown(events) == [0, 1, 2, "WorkflowFailedEvent"]


@pytest.mark.asyncio
async def test_a_reader_that_keeps_up_never_hits_the_bound() -> None:
    class Paced(Workflow):
        @step
        async def write(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            for n in range(50):
                ctx.write_event_to_stream(Tick(n=n))
                await asyncio.sleep(0)  # the reader runs between writes
            return StopEvent(result="done")

    handler = Paced(timeout=10, stream_limit=2).run()
    events = await drain(handler)
    assert await handler == "done"
    assert shown(events) == [*range(50), "StopEvent"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"stream_limit": 0},
            (
                "Writes(stream_limit=...) must be a positive integer (the most unread "
                "events a run's stream holds) or None for no bound, got 0"
            ),
        ),
        (
            {"stream_limit": True},
            (
                "Writes(stream_limit=...) must be a positive integer (the most unread "
                "events a run's stream holds) or None for no bound, got True"
            ),
        ),
        (
            {"stream_limit": 10, "stream_overflow": "drop"},
            "Writes(stream_overflow=...) must be 'fail' or 'drop_oldest', got 'drop'",
        ),
    ],
)
def test_bad_bound_options_are_named(options: dict[str, Any], message: str) -> None:
    with pytest.raises(WorkflowValidationError) as raised:
        Writes(**options)
    assert str(raised.value) == message


@pytest.mark.asyncio
async def test_internal_events_are_never_refused_by_the_bound() -> None:
    """With expose_internal=True, the runtime's own events take room but are never refused."""
    # The step's "started" event and two ticks fill the bound; its "ended" event follows.
    handler = Writes(timeout=10, stream_limit=3).run(count=2)
    events = handler.stream_events(expose_internal=True)  # read only once the run is over
    assert await handler == "done"
    async with asyncio.timeout(5):
        seen = [ev async for ev in events]
    # The step's "ended" event too: refused, it escaped the step's task as an internal error.
    assert [type(ev) for ev in seen] == [StepStateChanged, Tick, Tick, StepStateChanged, StopEvent]
