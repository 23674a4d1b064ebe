"""``ctx.step_key`` and ``stream_events(after=seq)`` on in-memory runs."""

from __future__ import annotations

import asyncio

import pytest

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.errors import ContextStateError
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event
from stepstream.events import HumanResponseEvent
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed


class Item(Event):
    """One of three items."""

    n: int


class Keys(Workflow):
    """Sends three items; ``work`` fails its first attempt on item 1; ``done`` joins."""

    keys: list[tuple[int, str]]

    @step
    async def fan(self, ctx: Context, ev: StartEvent) -> Item | None:
        """Send three items."""
        self.keys = [(-1, ctx.step_key)]
        for n in range(3):
            ctx.send_event(Item(n=n))
        return None

    @step(retry_policy=retry_policy(wait=wait_fixed(0.001), stop=stop_after_attempt(2)))
    async def work(self, ctx: Context, ev: Item) -> StopEvent | None:
        """Record the key; fail once on item 1."""
        self.keys.append((ev.n, ctx.step_key))
        if ev.n == 1 and ctx.retry_info().retry_number == 0:
            msg = "flaky"
            raise RuntimeError(msg)
        if len(self.keys) == 5:
            return StopEvent(result=None)
        return None


@pytest.mark.asyncio
async def test_each_invocation_has_its_own_key_and_keeps_it_across_retries() -> None:
    """step_key is run_id:step:n, n counting the step's invocations; a retry keeps it."""
    wf = Keys(timeout=10)
    handler = wf.run()
    await handler
    run = handler.run_id
    by_item: dict[int, set[str]] = {}
    for n, key in wf.keys:
        by_item.setdefault(n, set()).add(key)
    assert by_item[-1] == {f"{run}:fan:1"}
    assert by_item[1] == {f"{run}:work:2"}  # two attempts, one invocation
    assert {k for n in (0, 2) for k in by_item[n]} == {f"{run}:work:1", f"{run}:work:3"}


class Asks(Workflow):
    """Streams a question, waits for the answer."""

    keys: list[str]

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Record the key, ask, wait."""
        self.keys.append(ctx.step_key)
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="?"), waiter_id="q", timeout=None
        )
        return StopEvent(result=answer.get("response"))


@pytest.mark.asyncio
async def test_a_restored_context_reruns_the_waiting_step_as_the_same_invocation() -> None:
    """Saved while a step waits, restored in a new run: the step re-runs with its key."""
    wf = Asks(timeout=10)
    wf.keys = []
    handler = wf.run()
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            break
    saved = handler.ctx.to_dict()
    await handler.cancel_run()

    again = Asks(timeout=10)
    again.keys = []
    restored = again.run(ctx=Context.from_dict(again, saved))
    await asyncio.sleep(0.05)
    restored.ctx.send_event(HumanResponseEvent(response="yes"))
    assert await restored == "yes"
    assert again.keys == wf.keys == [f"{handler.run_id}:ask:1"]


@pytest.mark.asyncio
async def test_step_key_outside_a_step_is_refused() -> None:
    """The caller has no step invocation: reading ctx.step_key raises, naming why."""
    wf = Asks(timeout=10)
    wf.keys = []
    handler = wf.run()
    with pytest.raises(ContextStateError, match=r"only available from within a step"):
        _ = handler.ctx.step_key
    await handler.cancel_run()


class Talks(Workflow):
    """Streams four events, then ends."""

    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Write Item 0..3."""
        for n in range(4):
            ctx.write_event_to_stream(Item(n=n))
        return StopEvent(result="done")


async def items(events: object) -> list[object]:
    """The ``n`` of each Item from ``events``, and the type name of the others."""
    return [e.n if isinstance(e, Item) else type(e).__name__ async for e in events]  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_after_skips_the_events_up_to_a_seq_an_in_memory_run_still_holds() -> None:
    """after=1 starts at seq 2; after=-1 at the start."""
    handler = Talks(timeout=10).run()
    await handler
    assert await items(handler.stream_events(after=1)) == [2, 3, "StopEvent"]
    handler = Talks(timeout=10).run()
    await handler
    assert await items(handler.stream_events(after=-1)) == [0, 1, 2, 3, "StopEvent"]


@pytest.mark.asyncio
async def test_after_a_seq_already_read_from_an_in_memory_run_is_refused() -> None:
    """An in-memory run keeps no events once read: asking for them again names the range."""
    handler = Talks(timeout=10).run()
    await handler
    stream = handler.stream_events()
    assert await anext(stream) == Item(n=0)
    assert await anext(stream) == Item(n=1)
    with pytest.raises(WorkflowRuntimeError, match=r"keeps those from seq 2 on"):
        handler.stream_events(after=0)
    assert await items(handler.stream_events(after=2)) == [3, "StopEvent"]
