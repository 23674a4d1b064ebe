"""Workflows that trigger the fan-out / fan-in messages of docs/errors.md."""

from collections.abc import AsyncIterator
from typing import Annotated
from typing import Any

from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.collect import Cardinality
from stepstream.collect import Collect
from stepstream.collect import Take


class Item(Event):
    n: int = 0


class Other(Event):
    pass


class UnboundJoin(Workflow):
    """Its list[Item] step is fed by a step that returns one Item, not a list."""

    @step
    async def start(self, ev: StartEvent) -> Item:
        return Item()

    @step
    async def join(self, events: list[Item]) -> StopEvent:
        return StopEvent()


class AsyncGenerator(Workflow):
    @step
    async def start(self, ev: StartEvent) -> AsyncIterator[Item]:
        yield Item()

    @step
    async def finish(self, ev: Item) -> StopEvent:
        return StopEvent()


class FanOut(Workflow):
    """A fan-out of Items; subclasses change the join."""

    @step
    async def start(self, ev: StartEvent) -> list[Item]:
        return [Item(n=1)]

    @step
    async def join(self, events: list[Item]) -> StopEvent:
        return StopEvent()


class CollectOnEvent(FanOut):
    @step
    async def finish(self, ev: Annotated[Item, Collect()]) -> None:
        return None


class TakeWithoutCollect(FanOut):
    @step
    async def join(self, events: Annotated[list[Item], Take(2)]) -> StopEvent:
        return StopEvent()


class Weird(Cardinality):
    """A cardinality stepstream does not know."""


class WeirdCardinality(FanOut):
    @step
    async def join(self, events: Annotated[list[Item], Collect(Weird())]) -> StopEvent:
        return StopEvent()


class UnionSlots(Workflow):
    @step
    async def start(self, ev: StartEvent) -> Item | Other:
        return Item()

    @step
    async def assemble(self, a: Item, b: Item | Other) -> StopEvent:
        return StopEvent()


class SendsToJoin(FanOut):
    """Sends an Item to the join step by name."""

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> list[Item]:  # type: ignore[override]
        ctx.send_event(Item(), step="join")
        return []


class ReturnsBare(FanOut):
    @step
    async def start(self, ev: StartEvent) -> list[Item]:
        return Item()  # type: ignore[return-value]


class ReturnsNonEvents(FanOut):
    @step
    async def start(self, ev: StartEvent) -> list[Item]:
        return ["oops"]  # type: ignore[list-item]


class SendsIntoBatch(FanOut):
    """A branch sends an Item instead of returning it: the join does not collect it."""

    @step
    async def work(self, ctx: Context[Any], ev: Item) -> None:
        if ev.n == 1:
            ctx.send_event(Item(n=2))
