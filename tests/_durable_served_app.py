"""Workflows for ``stepstream serve --durable`` in tests/test_durable_server.py.

The serve process runs in a test's directory: the steps record side effects in
``effects.txt`` there (``step|step_key|pid``) and wait for gate files the test creates.
"""

import asyncio
import os
from pathlib import Path
from typing import Any

from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step


def effect(ctx: Context[Any], name: str) -> None:
    """Record that step ``name`` ran (outside the process)."""
    with Path("effects.txt").open("a", encoding="utf-8") as out:
        out.write(f"{name}|{ctx.step_key}|{os.getpid()}\n")


async def gate(name: str) -> None:
    """Wait until the test creates the file ``name``."""
    while not Path(name).exists():  # noqa: ASYNC110, ASYNC240 - another process creates it
        await asyncio.sleep(0.01)


class Label(Event):
    label: str


class Middle(Event):
    total: int


class ChainStart(StartEvent):
    x: int = 0


class Chain(Workflow):
    """Three steps; ``two`` streams, waits for the file ``gate``, streams again."""

    @step
    async def one(self, ctx: Context[Any], ev: ChainStart) -> Middle:
        effect(ctx, "one")
        ctx.write_event_to_stream(Label(label="one:0"))
        ctx.write_event_to_stream(Label(label="one:1"))
        return Middle(total=ev.x + 1)

    @step
    async def two(self, ctx: Context[Any], ev: Middle) -> Label:
        effect(ctx, "two")
        ctx.write_event_to_stream(Label(label="two:0"))
        await gate("gate")
        ctx.write_event_to_stream(Label(label="two:1"))
        return Label(label=str(ev.total * 10))

    @step
    async def three(self, ctx: Context[Any], ev: Label) -> StopEvent:
        effect(ctx, "three")
        ctx.write_event_to_stream(Label(label="three:0"))
        return StopEvent(result={"total": int(ev.label) + 2})


class Asking(Workflow):
    """Asks for a name; once answered records it, waits for ``gate-ask``, greets."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        effect(ctx, "ask")
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        effect(ctx, f"answered:{answer.get('response')}")
        await gate("gate-ask")
        return StopEvent(result=f"hello {answer.get('response')}")


class Greeting(Workflow):
    """Greets at once."""

    @step
    async def greet(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Label(label="hi"))
        return StopEvent(result=f"hi {ev.get('name', 'you')}")


chain = Chain(timeout=None)
asking = Asking(timeout=None)
greeting = Greeting(timeout=None)
