"""The handler and the event stream: results, ordering, failure, timeout, cancellation."""

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from typing import ClassVar

import pytest

from _helpers import EXAMPLES
from _helpers import FanOutJobs
from _helpers import Job
from _helpers import JobDone
from _helpers import Slow
from _helpers import StepTimeout
from _helpers import drain
from _helpers import run_command
from stepstream import Context
from stepstream import Event
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
from stepstream.testing import FakeStreamingLLM

EXAMPLE = EXAMPLES / "streaming.py"


# -- helpers ----------------------------------------------------------------------------


def messages(events: list[Event]) -> list[str]:
    """Return the ``msg`` of the Progress events among ``events``, in order."""
    return [ev.msg for ev in events if isinstance(ev, Progress)]


# -- events -----------------------------------------------------------------------------


class Progress(Event):
    msg: str


class NumStart(StartEvent):
    n: int = 0


class Finished(StopEvent):
    answer: int


class LeftEvent(Event):
    pass


class RightEvent(Event):
    pass


class Done(Event):
    side: str


class Middle(Event):
    n: int


# -- workflows --------------------------------------------------------------------------


class Echo(Workflow):
    """Writes ``n`` Progress events, then returns ``n * 2``."""

    @step
    async def work(self, ctx: Context[Any], ev: NumStart) -> StopEvent:
        for i in range(ev.n):
            ctx.write_event_to_stream(Progress(msg=f"{ev.n}:{i}"))
            await asyncio.sleep(0)
        return StopEvent(result=ev.n * 2)


class Keeping(Workflow):
    """Its steps keep, in ``kept``, what the test checks afterwards."""

    def __init__(self, timeout: float = 5) -> None:
        super().__init__(timeout=timeout)
        self.kept: list[Any] = []


class CustomStop(Keeping):
    """Ends with a StopEvent subclass, which it also keeps for identity checks."""

    @step
    async def work(self, ctx: Context[Any], ev: NumStart) -> Finished:
        done = Finished(answer=ev.n + 1)
        self.kept.append(done)
        return done


class ContextKeeper(Keeping):
    """Keeps the Context its step receives."""

    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        self.kept.append(ctx)
        return StopEvent(result="ok")


class Exploding(Keeping):
    """Writes one Progress event, then raises a ValueError it keeps."""

    @step
    async def explode(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(msg="before"))
        error = ValueError("bad input 42")
        self.kept.append(error)
        raise error


class Cancellable(Keeping):
    """Announces itself on the stream, then waits; keeps any CancelledError it sees."""

    @step
    async def wait_forever(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Progress(msg="started"))
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError as exc:
            self.kept.append(exc)
            raise
        return StopEvent(result="not cancelled")


class Forks(Keeping):
    """Its start step sends one LeftEvent and one RightEvent."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> LeftEvent | RightEvent | None:
        ctx.send_event(LeftEvent())
        ctx.send_event(RightEvent())
        return None


class ForkJoin(Forks):
    """Runs ``branch`` for the left and the right event concurrently, then joins them."""

    async def branch(self, ctx: Context[Any], side: str) -> None:
        """What each branch does before it is done."""
        raise NotImplementedError

    @step
    async def left(self, ctx: Context[Any], ev: LeftEvent) -> Done:
        await self.branch(ctx, "L")
        return Done(side="L")

    @step
    async def right(self, ctx: Context[Any], ev: RightEvent) -> Done:
        await self.branch(ctx, "R")
        return Done(side="R")

    @step
    async def join(self, ctx: Context[Any], ev: Done) -> StopEvent | None:
        if ctx.collect_events(ev, [Done, Done]) is None:
            return None
        return StopEvent(result="joined")


class Interleaved(ForkJoin):
    """Both branches write to the stream, keeping each write as it happens."""

    PAUSES: ClassVar[dict[str, list[int]]] = {
        "L": [1, 2, 1, 3, 1, 1, 2, 1, 1, 1],
        "R": [2, 1, 1, 1, 3, 1, 1, 2, 1, 1],
    }

    async def branch(self, ctx: Context[Any], side: str) -> None:
        """Write ten Progress events, yielding to the loop between them as PAUSES says."""
        for i, pause in enumerate(self.PAUSES[side]):
            msg = f"{side}{i}"
            self.kept.append(msg)
            ctx.write_event_to_stream(Progress(msg=msg))
            for _ in range(pause):
                await asyncio.sleep(0)


class TwoSlow(ForkJoin):
    """Both branches sleep 0.3 s."""

    async def branch(self, ctx: Context[Any], side: str) -> None:
        """Sleep 0.3 s."""
        await asyncio.sleep(0.3)


class StopWins(Forks):
    """One branch stops the run while its sibling is still sleeping."""

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.sibling_started = asyncio.Event()

    @step
    async def sibling(self, ctx: Context[Any], ev: LeftEvent) -> Done:
        ctx.write_event_to_stream(Progress(msg="sibling before stop"))
        self.sibling_started.set()
        try:
            # Shorter than the 2 s cancellation grace: a sibling that was not cancelled
            # would finish (and write) before the run's outcome is published.
            await asyncio.sleep(1)
        except asyncio.CancelledError as exc:
            self.kept.append(exc)
            ctx.write_event_to_stream(Progress(msg="sibling after stop"))
            raise
        ctx.write_event_to_stream(Progress(msg="sibling finished"))
        return Done(side="L")

    @step
    async def stopper(self, ctx: Context[Any], ev: RightEvent) -> StopEvent:
        await self.sibling_started.wait()
        return StopEvent(result="stopped")

    @step
    async def never(self, ctx: Context[Any], ev: Done) -> StopEvent:
        return StopEvent(result="sibling won")


class Bounded(FanOutJobs):
    """Six jobs through a step limited to two concurrent invocations."""

    jobs = 6

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.current = 0
        self.max_seen = 0

    @step(num_workers=2)
    async def worker(self, ctx: Context[Any], ev: Job) -> JobDone:
        self.current += 1
        self.max_seen = max(self.max_seen, self.current)
        try:
            await asyncio.sleep(0.02)
        finally:
            self.current -= 1
        return JobDone(i=ev.i)


class TwoStep(Workflow):
    """Two steps and one streamed event, for the verbose output."""

    @step
    async def first_step(self, ctx: Context[Any], ev: StartEvent) -> Middle:
        ctx.write_event_to_stream(Progress(msg="hello"))
        return Middle(n=1)

    @step
    async def second_step(self, ctx: Context[Any], ev: Middle) -> StopEvent:
        return StopEvent(result=ev.n)


# -- the handler ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_returns_a_handler_at_once() -> None:
    """wf.run() returns a WorkflowHandler before the run has done any work."""
    handler = Echo(timeout=5).run(n=3)
    assert isinstance(handler, WorkflowHandler)
    assert not handler.done()
    assert await handler == 6
    assert handler.done()


@pytest.mark.asyncio
async def test_await_handler_gives_the_stop_event_result() -> None:
    """Awaiting the handler gives the StopEvent's result."""
    assert await Echo(timeout=5).run(n=21) == 42


@pytest.mark.asyncio
async def test_await_handler_gives_a_custom_stop_event_itself() -> None:
    """A StopEvent subclass ending the run is returned as the event itself."""
    wf = CustomStop()
    result = await wf.run(n=4)
    assert isinstance(result, Finished)
    assert result is wf.kept[0]
    assert result.answer == 5


@pytest.mark.asyncio
async def test_run_ids_are_unique_strings() -> None:
    """Every run gets its own string run_id."""
    wf = Echo(timeout=5)
    handlers = [wf.run(n=0) for _ in range(10)]
    await asyncio.gather(*handlers)
    ids = [h.run_id for h in handlers]
    assert all(isinstance(i, str) and i for i in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.asyncio
async def test_handler_ctx_is_the_runs_context() -> None:
    """handler.ctx is a Context, the same one the steps receive."""
    wf = ContextKeeper()
    handler = wf.run()
    assert isinstance(handler.ctx, Context)
    await handler
    assert wf.kept == [handler.ctx]
    assert wf.kept[0] is handler.ctx


# -- the stream -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stream_yields_written_events_then_the_stop_event_then_ends() -> None:
    """The stream yields every written event in order, then the terminal StopEvent."""
    handler = Echo(timeout=5).run(n=5)
    events = await drain(handler)
    assert messages(events) == [f"5:{i}" for i in range(5)]
    assert len(events) == 6
    assert type(events[-1]) is StopEvent
    assert events[-1].result == 10
    assert await handler == 10


@pytest.mark.asyncio
async def test_stream_orders_concurrent_writes_as_they_happened() -> None:
    """Writes from concurrent steps reach the stream in the order they were made."""
    wf = Interleaved()
    handler = wf.run()
    events = await drain(handler)
    assert await handler == "joined"
    streamed = messages(events)
    assert streamed == wf.kept
    assert sorted(streamed) == sorted([f"L{i}" for i in range(10)] + [f"R{i}" for i in range(10)])
    # The two steps really interleaved, so the order is not simply one step after the other.
    assert streamed[:10] != [f"L{i}" for i in range(10)]
    assert streamed[:10] != [f"R{i}" for i in range(10)]
    assert isinstance(events[-1], StopEvent)


@pytest.mark.asyncio
async def test_events_written_before_iteration_are_buffered() -> None:
    """Iterating after the run finished still yields every event and the StopEvent."""
    handler = Echo(timeout=5).run(n=4)
    assert await handler == 8
    events = await drain(handler)
    assert messages(events) == ["4:0", "4:1", "4:2", "4:3"]
    assert type(events[-1]) is StopEvent


@pytest.mark.asyncio
async def test_breaking_out_and_iterating_again_resumes() -> None:
    """A second iteration after a break continues where the first one stopped."""
    handler = Echo(timeout=5).run(n=8)
    first: list[Event] = []
    async with asyncio.timeout(2):
        async for ev in handler.stream_events():
            first.append(ev)
            if len(first) == 3:
                break
    rest = await drain(handler)
    assert messages(first) == ["8:0", "8:1", "8:2"]
    assert messages(rest) == [f"8:{i}" for i in range(3, 8)]
    assert type(rest[-1]) is StopEvent
    assert await handler == 16


@pytest.mark.asyncio
async def test_iterating_after_the_terminal_event_raises() -> None:
    """Iterating a stream again after its StopEvent raises WorkflowRuntimeError."""
    handler = Echo(timeout=5).run(n=2)
    await drain(handler)
    with pytest.raises(WorkflowRuntimeError, match="already consumed"):
        await drain(handler)


# -- failure ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "await_first",
    [
        pytest.param(False, id="iterate-while-running"),
        pytest.param(True, id="iterate-after-the-run-ended"),
    ],
)
@pytest.mark.asyncio
async def test_step_error_ends_stream_with_failed_event(await_first: bool) -> None:
    """A raising step ends the stream with a WorkflowFailedEvent describing the error."""
    wf = Exploding()
    handler = wf.run()
    if await_first:
        with pytest.raises(ValueError, match="bad input 42"):
            await handler
    events = await drain(handler)
    assert messages(events) == ["before"]
    last = events[-1]
    assert isinstance(last, WorkflowFailedEvent)
    assert [type(ev) for ev in events if isinstance(ev, StopEvent)] == [WorkflowFailedEvent]
    assert last.step == "explode"
    assert last.exception_type == "ValueError"
    assert last.message == "bad input 42"


@pytest.mark.asyncio
async def test_await_handler_raises_the_steps_own_exception() -> None:
    """Awaiting a failed run raises the very exception object the step raised."""
    wf = Exploding()
    handler = wf.run()
    with pytest.raises(ValueError, match="bad input 42") as exc_info:
        await handler
    assert exc_info.value is wf.kept[0]


# -- timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "timeout"),
    [
        pytest.param(lambda: Slow(timeout=0.1), 0.1, id="workflow-timeout"),
        pytest.param(lambda: StepTimeout(timeout=10), 0.05, id="step-timeout"),
    ],
)
@pytest.mark.asyncio
async def test_timeout_ends_the_run_naming_the_slow_step(
    make: Callable[[], Workflow], timeout: float
) -> None:
    """A run or step timeout ends the stream with WorkflowTimedOutEvent naming the step."""
    step_name = "dawdle"
    wf = make()
    began = time.monotonic()
    handler = wf.run()
    events = await drain(handler)
    last = events[-1]
    assert isinstance(last, WorkflowTimedOutEvent)
    assert step_name in last.active_steps
    assert step_name in last.message
    assert last.timeout == pytest.approx(timeout)
    with pytest.raises(WorkflowTimeoutError) as exc_info:
        await handler
    assert step_name in str(exc_info.value)
    assert step_name in exc_info.value.active_steps
    assert time.monotonic() - began < 2


# -- cancellation -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_cancel_run_cancels_steps_and_ends_the_stream() -> None:
    """cancel_run() cancels the running step, ends the stream and fails the handler."""
    wf = Cancellable(timeout=10)
    handler = wf.run()
    async with asyncio.timeout(2):
        async for ev in handler.stream_events():
            if isinstance(ev, Progress) and ev.msg == "started":
                break
        await handler.cancel_run()
    rest = await drain(handler)
    assert len(rest) == 1
    assert isinstance(rest[0], WorkflowCancelledEvent)
    with pytest.raises(WorkflowCancelledError):
        await handler
    assert len(wf.kept) == 1
    assert isinstance(wf.kept[0], asyncio.CancelledError)


@pytest.mark.asyncio
async def test_stop_event_cancels_in_flight_siblings() -> None:
    """Returning a StopEvent cancels a sleeping sibling step and the run ends promptly."""
    wf = StopWins()
    began = time.monotonic()
    handler = wf.run()
    events = await drain(handler)
    assert await handler == "stopped"
    assert time.monotonic() - began < 2
    assert len(wf.kept) == 1
    assert isinstance(wf.kept[0], asyncio.CancelledError)
    assert "sibling before stop" in messages(events)
    assert "sibling finished" not in messages(events)
    assert type(events[-1]) is StopEvent
    assert events[-1].result == "stopped"


@pytest.mark.asyncio
async def test_writes_of_cancelled_siblings_do_not_reach_the_stream() -> None:
    """What a sibling writes after another step returned the StopEvent is not streamed."""
    wf = StopWins()
    handler = wf.run()
    events = await drain(handler)
    assert await handler == "stopped"
    assert len(wf.kept) == 1  # the sibling did write while being cancelled
    assert messages(events) == ["sibling before stop"]
    assert type(events[-1]) is StopEvent


# -- concurrency ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_steps_on_different_events_run_concurrently() -> None:
    """Two 0.3 s steps on different events overlap, taking well under 0.6 s in total."""
    began = time.monotonic()
    assert await TwoSlow().run() == "joined"
    assert time.monotonic() - began < 0.5


@pytest.mark.asyncio
async def test_num_workers_bounds_concurrent_invocations() -> None:
    """A step with num_workers=2 never runs more than two invocations at once."""
    wf = Bounded()
    assert await wf.run() == [0, 1, 2, 3, 4, 5]
    assert wf.max_seen == 2
    assert wf.current == 0


@pytest.mark.asyncio
async def test_concurrent_runs_of_one_instance_are_independent() -> None:
    """Twenty concurrent runs of one Workflow get their own results and streams."""
    wf = Echo(timeout=5)

    async def one(n: int) -> tuple[list[Event], Any]:
        handler = wf.run(n=n)
        events = await drain(handler)
        return events, await handler

    outcomes = await asyncio.gather(*(one(n) for n in range(1, 21)))
    for n, (events, result) in enumerate(outcomes, start=1):
        assert result == n * 2
        assert messages(events) == [f"{n}:{i}" for i in range(n)]
        assert type(events[-1]) is StopEvent
        assert events[-1].result == n * 2


# -- verbose ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_verbose_prints_a_line_per_step_start_end_and_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """verbose=True prints one stderr line per step start, step end and streamed event."""
    assert await TwoStep(timeout=5, verbose=True).run() == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    for name in ("first_step", "second_step"):
        assert len([ln for ln in lines if name in ln and "started" in ln]) == 1
        assert len([ln for ln in lines if name in ln and "finished" in ln]) == 1
    assert len([ln for ln in lines if "Progress" in ln]) == 1
    assert len(lines) == 5


@pytest.mark.asyncio
async def test_quiet_run_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """verbose=False prints nothing to stdout or stderr."""
    assert await TwoStep(timeout=5, verbose=False).run() == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ""


# -- the seed example -------------------------------------------------------------------


def test_streaming_example_runs(tmp_path: Path) -> None:
    """examples/streaming.py streams its progress and prints the final result."""
    proc = run_command(sys.executable, EXAMPLE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Step one is happening" in out
    assert "Ishmael." in out
    assert "Step three is happening" in out
    assert out.splitlines()[-1] == "Final result Workflow complete."
    one = out.index("Step one is happening")
    ishmael = out.index("Ishmael.")
    three = out.index("Step three is happening")
    assert one < ishmael < three


# -- FakeStreamingLLM -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(None, id="moby-dick"),
        pytest.param("one two  three\nfour", id="custom-text"),
    ],
)
@pytest.mark.asyncio
async def test_fake_llm_streams_the_text_in_chunks(text: str | None) -> None:
    """The deltas of FakeStreamingLLM concatenate to its text; the last chunk is all of it."""
    llm = FakeStreamingLLM() if text is None else FakeStreamingLLM(text=text)
    expected = llm.text
    chunks = [chunk async for chunk in await llm.astream_complete("prompt")]
    assert len(chunks) > 1
    assert "".join(c.delta for c in chunks) == expected
    assert str(chunks[-1]) == expected
    if text is None:
        assert expected.startswith("Call me Ishmael.")


@pytest.mark.asyncio
async def test_fake_llm_is_deterministic() -> None:
    """Two FakeStreamingLLM streams yield the same chunks."""
    first = [c.delta async for c in await FakeStreamingLLM().astream_complete("a")]
    second = [c.delta async for c in await FakeStreamingLLM().astream_complete("b")]
    assert first == second
