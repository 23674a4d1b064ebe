"""Saving a run's Context and continuing it (to_dict, from_dict, run(ctx=...)): public API."""

import asyncio
import json
from typing import Any

import pytest

from _helpers import KeepsComplex
from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.context import PickleSerializer
from stepstream.errors import ContextSerdeError
from stepstream.errors import ContextStateError
from stepstream.testing import capture_telemetry


class Asks(Workflow):
    """Counts its runs in the state, asks for a name inside the step, greets."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        await ctx.store.set("runs", await ctx.store.get("runs", default=0) + 1)
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
        )
        return StopEvent(result=f"hello {answer.get('response')}")


class Part(Event):
    n: int


class Prompt(Event):
    pass


class Joins(Workflow):
    """One part arrives before the human answers, the other after: the join spans the save."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Part | Prompt:
        ctx.send_event(Part(n=1))
        return Prompt()

    @step
    async def asker(self, ctx: Context[Any], ev: Prompt) -> Part:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(), waiter_id="go"
        )
        return Part(n=int(answer.get("response")))

    @step
    async def join(self, ctx: Context[Any], ev: Part) -> StopEvent | None:
        parts = ctx.collect_events(ev, [Part, Part])
        if parts is None:
            return None
        return StopEvent(result=[p.n for p in parts if isinstance(p, Part)])


async def save_at_prompt(wf: Workflow) -> dict[str, Any]:
    """Run ``wf`` to its first InputRequiredEvent, save the context (through JSON), cancel."""
    handler = wf.run()
    saved: dict[str, Any] = {}
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                saved = json.loads(json.dumps(handler.ctx.to_dict()))
                await handler.cancel_run()
                break
    return saved


@pytest.mark.asyncio
async def test_a_saved_wait_continues_in_a_new_workflow_instance() -> None:
    """A run saved while a step waits is continued by a fresh instance; state survives."""
    saved = await save_at_prompt(Asks(timeout=5))
    ctx = Context.from_dict(Asks(timeout=5), saved)
    assert ctx.is_running
    wf = Asks(timeout=5)
    handler = wf.run(ctx=ctx)
    await handler.send_event(HumanResponseEvent(response="Ada"))
    events = [ev async for ev in handler.stream_events()]
    assert await handler == "hello Ada"
    # The waiting step ran again from the top, but its prompt is not streamed twice.
    assert [type(ev).__name__ for ev in events] == ["StopEvent"]
    assert await handler.ctx.store.get("runs") == 2
    assert handler.run_id == saved["run_id"]


@pytest.mark.asyncio
async def test_a_join_begun_before_the_save_completes_after_it() -> None:
    """Events collected before the save stay collected in the continued run."""
    saved = await save_at_prompt(Joins(timeout=5))
    assert saved["waiters"][0]["waiter_id"] == "go"
    assert [len(j["events"]) for j in saved["joins"]] == [1]
    handler = Joins(timeout=5).run(ctx=Context.from_dict(Joins(timeout=5), saved))
    await handler.send_event(HumanResponseEvent(response="2"))
    assert await handler == [1, 2]


@pytest.mark.asyncio
async def test_the_continued_run_is_in_the_same_trace_linked_to_the_saved_one() -> None:
    """Same trace id, a link to the saved run span, resumed and attempt attributes, no
    duplicate lines for what was streamed before the save."""
    with capture_telemetry() as tel:
        saved = await save_at_prompt(Asks(timeout=5))
        handler = Asks(timeout=5).run(ctx=Context.from_dict(Asks(timeout=5), saved))
        await handler.send_event(HumanResponseEvent(response="Ada"))
        await handler
    first, second = tel.named("invoke_workflow Asks")
    assert first.context is not None
    assert second.context is not None
    assert second.context.trace_id == first.context.trace_id
    assert [link.context.span_id for link in second.links] == [first.context.span_id]
    assert second.parent is not None
    assert second.parent.span_id == first.context.span_id
    assert second.attributes is not None
    assert second.attributes["stepstream.run.resumed"] is True
    assert second.attributes["stepstream.run.attempt"] == 2
    streamed = [(line["seq"], line["event_type"]) for line in tel.lines("stream_event")]
    assert streamed == [(0, "InputRequiredEvent"), (1, "WorkflowCancelledEvent"), (1, "StopEvent")]
    resumed_lines = [line for line in tel.logs if line.get("resumed")]
    assert {line["run_attempt"] for line in resumed_lines} == {2}


@pytest.mark.asyncio
async def test_state_staged_before_the_run_is_carried_in() -> None:
    """await ctx.store.set(...) on Context(wf) before run(ctx=ctx) is seen by the steps."""

    class ReadsState(Workflow):
        @step
        async def read(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            return StopEvent(result=await ctx.store.get("greeting"))

    wf = ReadsState(timeout=5)
    ctx: Context[Any] = Context(wf)
    assert not ctx.is_running
    await ctx.store.set("greeting", "hi")
    handler = wf.run(ctx=ctx)
    assert handler.ctx is ctx
    assert await handler == "hi"
    assert not ctx.is_running


@pytest.mark.asyncio
async def test_a_finished_context_starts_a_new_run_with_its_state() -> None:
    """run(ctx=) with a context whose run ended starts afresh, keeping the state."""

    class Counts(Workflow):
        @step
        async def count(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            n = await ctx.store.get("n", default=0) + 1
            await ctx.store.set("n", n)
            return StopEvent(result=n)

    wf = Counts(timeout=5)
    first = wf.run()
    assert await first == 1
    saved = first.ctx.to_dict()
    assert saved["is_running"] is False
    assert await wf.run(ctx=first.ctx) == 2
    assert await wf.run(ctx=Context.from_dict(wf, saved)) == 2


@pytest.mark.asyncio
async def test_a_context_cannot_start_a_second_run_while_its_run_is_running() -> None:
    """run(ctx=) with a running context raises ContextStateError saying what to do."""
    wf = Asks(timeout=5)
    handler = wf.run()
    with pytest.raises(ContextStateError) as info:
        wf.run(ctx=handler.ctx)
    assert str(info.value) == (
        "cannot start a new run while this context's run is still running; wait for it to "
        "end (await handler) or use a new Context"
    )
    await handler.cancel_run()


@pytest.mark.asyncio
async def test_to_dict_from_inside_a_step_is_refused() -> None:
    """ctx.to_dict() in a step raises ContextStateError naming handler.ctx."""

    class Saves(Workflow):
        @step
        async def save(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
            ctx.to_dict()
            return StopEvent()

    with pytest.raises(ContextStateError) as info:
        await Saves(timeout=5).run()
    assert str(info.value) == (
        "to_dict() is only available from handler code, not from within steps; call it on "
        "handler.ctx"
    )


def test_a_context_belongs_to_its_workflow() -> None:
    """from_dict with another workflow's saved context raises ContextSerdeError."""
    saved: dict[str, Any] = Context(Asks()).to_dict()
    with pytest.raises(ContextSerdeError) as info:
        Context.from_dict(Joins(), saved)
    assert str(info.value) == (
        f"this context was saved from workflow {__name__}.Asks, not {__name__}.Joins; "
        f"restore it with Context.from_dict({__name__}.Asks(...), data)"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(
            [],
            "a saved context is a dict (from ctx.to_dict()), got list",
            id="not-a-dict",
        ),
        pytest.param(
            {"version": 2, "state": {}},
            "this dict is not a context saved by stepstream (format None, version 2; expected "
            "'stepstream.context', 2); pass what ctx.to_dict() returned",
            id="foreign",
        ),
    ],
)
def test_a_malformed_saved_context_is_refused_clearly(data: object, message: str) -> None:
    """from_dict raises ContextSerdeError saying what it expected."""
    with pytest.raises(ContextSerdeError) as info:
        Context.from_dict(Asks(), data)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_a_damaged_saved_context_names_the_problem() -> None:
    """A saved context missing a key raises ContextSerdeError naming the error."""
    data = Context(Asks()).to_dict()
    del data["queue"]
    with pytest.raises(ContextSerdeError) as info:
        Context.from_dict(Asks(), data)
    assert str(info.value) == (
        "the saved context could not be read (KeyError: 'queue'); pass what ctx.to_dict() "
        "returned, with the serializer it was saved with"
    )


@pytest.mark.asyncio
async def test_include_state_false_and_a_pickle_serializer() -> None:
    """include_state=False leaves the state out; PickleSerializer keeps non-JSON values."""
    wf = KeepsComplex(timeout=5)
    handler = wf.run()
    await handler
    assert handler.ctx.to_dict(include_state=False)["state"] == {}
    saved = handler.ctx.to_dict(serializer=PickleSerializer())
    restored = Context.from_dict(wf, saved, serializer=PickleSerializer())
    assert await restored.store.get("value") == complex(1, 2)


def test_send_event_before_the_run_is_refused() -> None:
    """send_event on a Context that has not run yet raises ContextStateError."""
    with pytest.raises(ContextStateError) as info:
        Context(Asks()).send_event(HumanResponseEvent())
    assert str(info.value) == (
        "send_event() called before the workflow started; call workflow.run(ctx=ctx) first"
    )


class AnswersThenWorks(Workflow):
    """Asks, and once answered works on (until the test lets it finish)."""

    def __init__(self, release: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = release

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name?")
        )
        ctx.write_event_to_stream(Part(n=1))
        await self.release.wait()
        return StopEvent(result=f"hello {answer.get('response')}")


@pytest.mark.asyncio
async def test_an_answer_a_step_took_is_saved_while_the_step_works_on() -> None:
    """Saved after the answer reached the waiting step but before the step ended, the
    continued run re-runs the step with that answer: it is not asked again."""
    handler = AnswersThenWorks(asyncio.Event(), timeout=5).run()
    async with asyncio.timeout(5):
        async for ev in handler.stream_events():
            if isinstance(ev, InputRequiredEvent):
                await handler.send_event(HumanResponseEvent(response="Ada"))
            elif isinstance(ev, Part):
                break
    saved = json.loads(json.dumps(handler.ctx.to_dict()))
    await handler.cancel_run()
    release = asyncio.Event()
    release.set()
    wf = AnswersThenWorks(release, timeout=5)
    continued = wf.run(ctx=Context.from_dict(wf, saved))
    assert await continued == "hello Ada"
