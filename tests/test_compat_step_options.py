"""@step's LlamaIndex options and Workflow(serializer=...), through the public API."""

from typing import Any

import pytest

from _helpers import KeepsComplex
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.context import PickleSerializer


class Base(Event):
    pass


class Derived(Base):
    pass


class Routes(Workflow):
    """``exact`` takes only Base; ``wide`` takes Base and its subclasses."""

    def __init__(self) -> None:
        super().__init__(timeout=5)
        self.seen: list[str] = []

    @step
    async def start(self, ctx: Context[Any], ev: StartEvent) -> Base | None:
        ctx.send_event(Derived())
        ctx.send_event(Base())
        return None

    @step(accept_event_subclasses=False)
    async def exact(self, ev: Base) -> None:
        self.seen.append(f"exact {type(ev).__name__}")

    @step
    async def wide(self, ctx: Context[Any], ev: Base) -> StopEvent | None:
        self.seen.append(f"wide {type(ev).__name__}")
        if ctx.collect_events(ev, [Base, Base]) is None:
            return None
        return StopEvent()


@pytest.mark.asyncio
async def test_accept_event_subclasses_false_routes_exact_types_only() -> None:
    """A step with accept_event_subclasses=False gets Base but not Derived."""
    wf = Routes()
    await wf.run()
    assert sorted(wf.seen) == ["exact Base", "wide Base", "wide Derived"]


class Orphan(Event):
    pass


def test_a_step_may_skip_the_reachability_check() -> None:
    """skip_graph_checks=["reachability"] exempts a step's events from "never produced"."""

    class Takes(Workflow):
        @step
        async def start(self, ev: StartEvent) -> StopEvent:
            return StopEvent()

        @step(skip_graph_checks=["reachability"])
        async def later(self, ev: Orphan) -> StopEvent:
            return StopEvent()

    assert Takes().validate() is False


def test_unknown_step_graph_checks_are_refused() -> None:
    """An unknown name in @step(skip_graph_checks=...) is a WorkflowValidationError."""
    with pytest.raises(WorkflowValidationError) as info:

        @step(skip_graph_checks=["terminal_event"])
        async def later(ev: Orphan) -> StopEvent:
            return StopEvent()

    expected = (
        "unknown graph check name(s) in skip_graph_checks: terminal_event; valid names are "
        "dead_end, reachability"
    )
    assert info.value.problems == (expected,)


@pytest.mark.asyncio
async def test_the_workflow_serializer_is_the_contexts_default() -> None:
    """Workflow(serializer=PickleSerializer()) saves contexts with it by default."""
    wf = KeepsComplex(serializer=PickleSerializer())
    assert isinstance(wf.serializer, PickleSerializer)
    handler = wf.run()
    await handler
    restored = Context.from_dict(wf, handler.ctx.to_dict())
    assert await restored.store.get("value") == complex(1, 2)
