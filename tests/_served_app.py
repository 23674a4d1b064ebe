"""Workflows served by the server tests (``stepstream serve tests/_served_app.py``)."""

import asyncio
from typing import Any

from stepstream import Context
from stepstream import Event
from stepstream import HumanResponseEvent
from stepstream import InputRequiredEvent
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step


class InputEvent(StartEvent):
    greeting: str
    name: str


class GreetEvent(Event):
    greeting: str
    exclamation_marks: int


class OutputEvent(StopEvent):
    greeting: str


class GreetingWorkflow(Workflow):
    """Greets: streams its start event and the greeting, ends with an OutputEvent."""

    @step
    async def first_step(self, ctx: Context[Any], ev: InputEvent) -> GreetEvent:
        ctx.write_event_to_stream(ev)
        return GreetEvent(greeting=f"{ev.greeting} {ev.name}", exclamation_marks=3)

    @step
    async def second_step(self, ctx: Context[Any], ev: GreetEvent) -> OutputEvent:
        ctx.write_event_to_stream(ev)
        return OutputEvent(greeting=f"{ev.greeting}{'!' * ev.exclamation_marks}")


class Tick(Event):
    i: int


class CountStart(StartEvent):
    n: int = 20
    delay: float = 0.0


class CountingWorkflow(Workflow):
    """Streams Tick(i) for i < n, ``delay`` seconds apart, then returns n."""

    @step
    async def count(self, ctx: Context[Any], ev: CountStart) -> StopEvent:
        for i in range(ev.n):
            ctx.write_event_to_stream(Tick(i=i))
            if ev.delay:
                await asyncio.sleep(ev.delay)
        return StopEvent(result=ev.n)


class AskingWorkflow(Workflow):
    """Asks a human (InputRequiredEvent) and ends with their answer."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="name? "), timeout=20
        )
        return StopEvent(result=f"hello {answer.get('response')}")


class CrashingWorkflow(Workflow):
    """Fails at once."""

    @step
    async def crash(self, ev: StartEvent) -> StopEvent:
        msg = "Workflow crashed intentionally"
        raise ValueError(msg)


class SleepingWorkflow(Workflow):
    """Waits until cancelled (at most a minute)."""

    @step
    async def sleep(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Tick(i=0))
        await asyncio.sleep(60)
        return StopEvent(result="woke")


greeting = GreetingWorkflow(timeout=20)
counting = CountingWorkflow(timeout=60)
asking = AskingWorkflow(timeout=30)
crashing = CrashingWorkflow(timeout=20)
sleeping = SleepingWorkflow(timeout=90)
