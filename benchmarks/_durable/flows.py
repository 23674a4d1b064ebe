"""The durable benchmark's workflows, identical for stepstream and the peer but for imports.

The library is chosen by ``BENCH_DURABLE_LIB`` (``stepstream`` or ``llama``), set by the
driver before it imports this module. Steps that matter to the measurement leave marks:

- ``STAMPS`` (in-process): ``perf_counter()`` at each ``Chain.tick`` invocation;
- the counter file (``BENCH_DURABLE_COUNTER``, outside the process): one line per step
  entry and completion of ``Park3``, appended with O_APPEND so a line is never torn and
  survives ``kill -9``. ``BENCH_DURABLE_PARK=1`` makes ``Park3.s2`` wait an hour (the
  process is killed while every run is parked there); otherwise it returns at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

LIB = os.environ.get("BENCH_DURABLE_LIB", "stepstream")

if LIB == "stepstream":
    from stepstream import (
        Context,
        Event,
        HumanResponseEvent,
        InputRequiredEvent,
        StartEvent,
        StopEvent,
        Workflow,
        step,
    )
else:  # the peer: llama-index-workflows, same API
    from workflows import Context, Workflow, step  # type: ignore[no-redef,import-not-found,unused-ignore]
    from workflows.events import (  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
        Event,
        HumanResponseEvent,
        InputRequiredEvent,
        StartEvent,
        StopEvent,
    )

STAMPS: list[float] = []
ASKED = [0]  # how many Hitl runs asked their question (in-process)


def mark(tag: str, step_name: str, phase: str) -> None:
    """Append ``tag step phase`` to the counter file (one write, O_APPEND)."""
    path = os.environ.get("BENCH_DURABLE_COUNTER")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{tag} {step_name} {phase}\n".encode())
    finally:
        os.close(fd)


# -- (a) N sequential steps: the same step, invoked N times ----------------------------------


class Tick(Event):
    i: int
    n: int


class Chain(Workflow):
    @step
    async def begin(self, ev: StartEvent) -> Tick:
        return Tick(i=0, n=int(ev.n))

    @step
    async def tick(self, ev: Tick) -> Tick | StopEvent:
        STAMPS.append(time.perf_counter())
        if ev.i + 1 >= ev.n:
            return StopEvent(result=ev.i + 1)
        return Tick(i=ev.i + 1, n=ev.n)


# -- (b) a 3-step run --------------------------------------------------------------------------


class A(Event):
    tag: str


class B(Event):
    tag: str


class Three(Workflow):
    @step
    async def a(self, ev: StartEvent) -> A:
        return A(tag=str(ev.tag))

    @step
    async def b(self, ev: A) -> B:
        return B(tag=ev.tag)

    @step
    async def c(self, ev: B) -> StopEvent:
        return StopEvent(result=ev.tag)


# -- the live stream: write_event_to_stream -> reader latency ---------------------------------


class Progress(Event):
    i: int
    ns: int


class Streamer(Workflow):
    @step
    async def talk(self, ctx: Context, ev: StartEvent) -> StopEvent:
        n, gap = int(ev.n), float(ev.gap)
        for i in range(n):
            ctx.write_event_to_stream(Progress(i=i, ns=time.perf_counter_ns()))
            await asyncio.sleep(gap)
        return StopEvent(result=n)


# -- (c) recovery: three steps, every run parked in the second when the process is killed ----


class Park3(Workflow):
    @step
    async def s1(self, ev: StartEvent) -> A:
        tag = str(ev.tag)
        mark(tag, "s1", "enter")
        mark(tag, "s1", "done")
        return A(tag=tag)

    @step
    async def s2(self, ev: A) -> B:
        mark(ev.tag, "s2", "enter")
        if os.environ.get("BENCH_DURABLE_PARK") == "1":
            await asyncio.sleep(3600)
        mark(ev.tag, "s2", "done")
        return B(tag=ev.tag)

    @step
    async def s3(self, ev: B) -> StopEvent:
        mark(ev.tag, "s3", "enter")
        mark(ev.tag, "s3", "done")
        return StopEvent(result=ev.tag)


# -- (d) a run parked on a human's answer --------------------------------------------------


class Ask(InputRequiredEvent):
    prefix: str = "?"


class Answer(HumanResponseEvent):
    response: str = ""


class Hitl(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> Ask:
        ASKED[0] += 1
        return Ask()

    @step
    async def answer(self, ev: Answer) -> StopEvent:
        return StopEvent(result=ev.response)


WORKFLOWS: dict[str, type[Any]] = {
    "chain": Chain,
    "three": Three,
    "streamer": Streamer,
    "park3": Park3,
    "hitl": Hitl,
}
TIMEOUTS: dict[str, float | None] = {
    "chain": 600.0,
    "three": 60.0,
    "streamer": 60.0,
    "park3": None,
    "hitl": None,
}
