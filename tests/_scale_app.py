"""Workflows served by the replicas of tests/test_scale_cluster.py.

Each replica runs in the test's directory: a step records, as it completes, a line
``done|run_id|step|step_key|pid`` in ``effects.txt`` there (appends of one short line
from several processes do not interleave), so the test can tell which step ran where
and how often. ``Limited`` records ``begin|...`` and ``end|...`` with the time, to
measure how many of its runs overlapped in the whole cluster.
"""

import asyncio
import os
import time
from pathlib import Path

from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed


def record(ctx: Context, step_name: str, kind: str = "done") -> None:
    """One line of ``effects.txt``: this step's side effect."""
    run_id = ctx.step_key.partition(":")[0]
    line = f"{kind}|{run_id}|{step_name}|{ctx.step_key}|{os.getpid()}|{time.time()}\n"
    with Path("effects.txt").open("a", encoding="utf-8") as out:
        out.write(line)


class Label(Event):
    label: str


class Hop(Event):
    n: int


class Item(Event):
    n: int


class Squared(Event):
    n: int


class Chain(Workflow):
    """Three steps, each streaming a label and pausing a little."""

    @step
    async def one(self, ctx: Context, ev: StartEvent) -> Hop:
        ctx.write_event_to_stream(Label(label="one"))
        await asyncio.sleep(0.1)
        record(ctx, "one")
        return Hop(n=int(ev.get("x", 0)) + 1)

    @step
    async def two(self, ctx: Context, ev: Hop) -> Item:
        ctx.write_event_to_stream(Label(label="two"))
        await asyncio.sleep(0.1)
        record(ctx, "two")
        return Item(n=ev.n * 10)

    @step
    async def three(self, ctx: Context, ev: Item) -> StopEvent:
        ctx.write_event_to_stream(Label(label="three"))
        await asyncio.sleep(0.1)
        record(ctx, "three")
        return StopEvent(result=ev.n + 2)


class Fan(Workflow):
    """Fan out into four items (two workers), square them, join."""

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> list[Item]:
        record(ctx, "split")
        return [Item(n=int(ev.get("x", 0)) + k) for k in range(4)]

    @step(num_workers=2)
    async def square(self, ctx: Context, ev: Item) -> Squared:
        await asyncio.sleep(0.05)
        ctx.write_event_to_stream(Label(label=f"sq{ev.n}"))
        record(ctx, "square")
        return Squared(n=ev.n * ev.n)

    @step
    async def join(self, ctx: Context, evs: list[Squared]) -> StopEvent:
        record(ctx, "join")
        return StopEvent(result=sum(e.n for e in evs))


class Ask(Workflow):
    """Ask a human, wait for the answer, greet."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> Hop:
        reply = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        record(ctx, "ask")
        return Hop(n=len(str(reply.get("response"))))

    @step
    async def greet(self, ctx: Context, ev: Hop) -> StopEvent:
        record(ctx, "greet")
        return StopEvent(result=f"hello {ev.n}")


class Flaky(Workflow):
    """A step failing its first attempt, retried after 0.2 s."""

    @step(retry_policy=retry_policy(wait=wait_fixed(0.2), stop=stop_after_attempt(5)))
    async def flaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        retries = ctx.retry_info().retry_number
        if retries < 1:
            msg = f"attempt {retries + 1} fails"
            raise ValueError(msg)
        record(ctx, "flaky")
        return StopEvent(result={"x": int(ev.get("x", 0)), "retries": retries})


class Limited(Workflow):
    """One step of 0.3 s; at most two runs at once in the whole cluster."""

    @step
    async def work(self, ctx: Context, ev: StartEvent) -> StopEvent:
        record(ctx, "work", "begin")
        await asyncio.sleep(0.3)
        record(ctx, "work", "end")
        record(ctx, "work")
        return StopEvent(result=int(ev.get("x", 0)) * 2)


chain = Chain(timeout=None)
fan = Fan(timeout=None)
ask = Ask(timeout=None)
flaky = Flaky(timeout=None)
limited = Limited(timeout=None, num_concurrent_runs=2)
