"""Workflows defined in a module that uses ``from __future__ import annotations``.

Every annotation here is a string at runtime, so stepstream has to resolve it: the
module-level workflow refers to event classes defined *after* it, and the factory
builds a workflow whose events are local to a function.
"""

from __future__ import annotations

from typing import Any

# Context and StartEvent are imported at runtime on purpose: stepstream resolves these
# string annotations when the workflow is instantiated.
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step


class FutureWorkflow(Workflow):
    """StartEvent -> LaterEvent -> StopEvent, with LaterEvent defined below the class."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> LaterEvent:
        return LaterEvent(text=f"{ev.get('word', '')}!")

    @step
    def finish(self, ev: LaterEvent) -> StopEvent:
        return StopEvent(result=ev.text.upper())


class LaterEvent(Event):
    """Defined after the workflow that uses it in its annotations."""

    text: str


def make_local_workflow() -> type[Workflow]:
    """Return a workflow class whose event classes are local to this function."""

    class LocalEvent(Event):
        n: int

    class LocalWorkflow(Workflow):
        @step
        async def begin(self, ev: StartEvent) -> LocalEvent:
            return LocalEvent(n=int(ev.get("n", 0)))

        @step
        async def finish(self, ctx: Context[Any], ev: LocalEvent) -> StopEvent:
            return StopEvent(result=ev.n * 2)

    return LocalWorkflow
