"""Workflows the web view and ``stepstream watch`` tests serve: text deltas, steps, a human."""

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

HOSTILE = "<img src=x onerror=\"document.title='pwned'\">\x1b[31m\u202e</td>"


class WriteStart(StartEvent):
    topic: str = "whales"
    words: int = 12
    delay: float = 0.05


class Outline(Event):
    topic: str
    words: int
    delay: float


class Draft(Event):
    text: str


class TextDelta(Event):
    delta: str


class Note(Event):
    label: str
    size: int


class WritingWorkflow(Workflow):
    """Plans, writes a draft word by word (text deltas), then reviews it."""

    @step
    async def plan(self, ctx: Context[Any], ev: WriteStart) -> Outline:
        ctx.write_event_to_stream(Note(label=f"planning {ev.topic}", size=ev.words))
        await asyncio.sleep(ev.delay)
        return Outline(topic=ev.topic, words=ev.words, delay=ev.delay)

    @step
    async def write(self, ctx: Context[Any], ev: Outline) -> Draft:
        words = []
        for i in range(ev.words):
            word = f"{ev.topic}{i} "
            words.append(word)
            ctx.write_event_to_stream(TextDelta(delta=word))
            await asyncio.sleep(ev.delay)
        return Draft(text="".join(words))

    @step
    async def review(self, ctx: Context[Any], ev: Draft) -> StopEvent:
        ctx.write_event_to_stream(Note(label="reviewed", size=len(ev.text)))
        await asyncio.sleep(0.05)
        return StopEvent(result=f"{len(ev.text.split())} words about it")


class HostileWorkflow(Workflow):
    """Streams markup and terminal control characters as plain data, and returns them."""

    @step
    async def shout(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(TextDelta(delta=HOSTILE))
        ctx.write_event_to_stream(Note(label=HOSTILE, size=1))
        return StopEvent(result=HOSTILE)


class AskingWorkflow(Workflow):
    """Asks a human for a name (InputRequiredEvent) and greets them."""

    @step
    async def ask(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="Your name? "), timeout=60
        )
        return StopEvent(result=f"hello {answer.get('response')}")


writing = WritingWorkflow(timeout=60)
hostile = HostileWorkflow(timeout=20)
asking = AskingWorkflow(timeout=90)
