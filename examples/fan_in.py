"""Fan-out and fan-in written in the step signatures (LlamaIndex's concurrent-execution guide).

A step that returns ``list[Task]`` fans out: each element runs as its own event, and the
whole list is one *batch*. A step that takes ``list[Done]`` fans in: it fires once per
batch, with every ``Done`` the batch's steps returned, in the order they finished.

- ``ConcurrentFlow``: five tasks, one join over the whole batch (a worker returning None
  drops its branch; the join still fires once, with the others).
- ``FastestWins``: ``Annotated[list[Done], Collect(Take(1))]`` fires on the first result.
- ``Nested``: a fan-out inside a fan-out; the inner join fires once per outer task, the
  outer join once over the inner summaries.
- ``Assemble``: a step with three event parameters fires once one of each has arrived.

Run it::

    python examples/fan_in.py
"""

import asyncio
from typing import Annotated

from stepstream import Workflow, step
from stepstream.collect import Collect, Take
from stepstream.events import Event, StartEvent, StopEvent


class Task(Event):
    n: int


class Done(Event):
    n: int


#: The task whose worker drops its branch in ConcurrentFlow.
DROPPED = 4


class ConcurrentFlow(Workflow):
    """Fans out five tasks, drops one branch, joins the rest."""

    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i) for i in range(5)]

    @step(num_workers=5)
    async def work(self, ev: Task) -> Done | None:
        await asyncio.sleep(0.01 * (5 - ev.n))  # the last one finishes first
        if ev.n == DROPPED:
            return None  # drop this branch
        return Done(n=ev.n)

    @step
    async def join(self, events: list[Done]) -> StopEvent:
        return StopEvent(
            result={"finished": [e.n for e in events], "sorted": sorted(e.n for e in events)}
        )


class FastestWins(Workflow):
    """The first task to finish wins; the others run on but never reach the join."""

    @step
    async def fan_out(self, ev: StartEvent) -> list[Task]:
        return [Task(n=i) for i in range(5)]

    @step(num_workers=5)
    async def work(self, ev: Task) -> Done:
        await asyncio.sleep(0.01 * (1 + abs(ev.n - 3)))  # task 3 is the fastest
        return Done(n=ev.n)

    @step
    async def first(self, events: Annotated[list[Done], Collect(Take(1))]) -> StopEvent:
        return StopEvent(result=events[0].n)


class InnerTask(Event):
    outer: int
    inner: int


class InnerDone(Event):
    outer: int
    inner: int


class InnerSummary(Event):
    outer: int
    total: int


class Nested(Workflow):
    """Three outer tasks, two inner tasks each: a join per level."""

    @step
    async def outer(self, ev: StartEvent) -> list[Task]:
        return [Task(n=o) for o in range(3)]

    @step
    async def inner(self, ev: Task) -> list[InnerTask]:
        return [InnerTask(outer=ev.n, inner=i) for i in range(2)]

    @step
    async def inner_work(self, ev: InnerTask) -> InnerDone:
        return InnerDone(outer=ev.outer, inner=ev.inner)

    @step
    async def per_inner(self, events: list[InnerDone]) -> InnerSummary:
        return InnerSummary(outer=events[0].outer, total=len(events))

    @step
    async def per_outer(self, events: list[InnerSummary]) -> StopEvent:
        return StopEvent(result=sorted((s.outer, s.total) for s in events))


class StepACompleteEvent(Event):
    result: str


class StepBCompleteEvent(Event):
    result: str


class StepCCompleteEvent(Event):
    result: str


class Assemble(Workflow):
    """Three steps run at once from the start event; ``assemble`` waits for all three."""

    @step
    async def step_a(self, ev: StartEvent) -> StepACompleteEvent:
        await asyncio.sleep(0.03)
        return StepACompleteEvent(result="Query 1")

    @step
    async def step_b(self, ev: StartEvent) -> StepBCompleteEvent:
        await asyncio.sleep(0.01)
        return StepBCompleteEvent(result="Query 2")

    @step
    async def step_c(self, ev: StartEvent) -> StepCCompleteEvent:
        await asyncio.sleep(0.02)
        return StepCCompleteEvent(result="Query 3")

    @step
    async def assemble(
        self, a: StepACompleteEvent, b: StepBCompleteEvent, c: StepCCompleteEvent
    ) -> StopEvent:
        return StopEvent(result=[a.result, b.result, c.result])


async def main() -> None:
    print("concurrent:", await ConcurrentFlow(timeout=10).run())
    print("fastest:", await FastestWins(timeout=10).run())
    print("nested:", await Nested(timeout=10).run())
    print("assemble:", await Assemble(timeout=10).run())


if __name__ == "__main__":
    asyncio.run(main())
