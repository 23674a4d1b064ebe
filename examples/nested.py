"""Nested workflows: a step of an outer workflow runs an inner workflow and relays its events.

``OuterWorkflow.research`` starts ``InnerWorkflow`` with ``self.inner.run(...)``, copies
every event the inner run streams into the outer run's stream (so a caller watching the
outer run sees the inner progress live), then awaits the inner result and passes it on.

Tracing: a run span is a child of whatever span is current when the run starts, and
while a step runs its ``run_step <name>`` span is current. So the inner run's span,
``invoke_workflow InnerWorkflow``, nests under the outer step span ``run_step research``,
in the same trace as ``invoke_workflow OuterWorkflow``::

    invoke_workflow OuterWorkflow
    ├── run_step research
    │   └── invoke_workflow InnerWorkflow
    │       ├── run_step outline
    │       └── run_step draft
    └── run_step publish

``OuterWorkflow(tracer_provider=...)`` hands its provider to the default inner workflow;
pass ``inner=`` to use another one.

The file defines two workflows, so name the outer one for the CLI::

    python examples/nested.py
    stepstream run examples/nested.py:OuterWorkflow --input topic=octopuses
"""

import asyncio
from typing import Any

from opentelemetry.trace import TracerProvider

from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class ProgressEvent(Event):
    source: str
    msg: str


class TopicStart(StartEvent):
    topic: str = "whales"


class OutlineEvent(Event):
    topic: str
    sections: list[str]


class DraftEvent(Event):
    text: str


class InnerWorkflow(Workflow):
    """Outlines a topic, then drafts one sentence per section."""

    @step
    async def outline(self, ctx: Context[Any], ev: TopicStart) -> OutlineEvent:
        sections = ["habitat", "diet", "behaviour"]
        ctx.write_event_to_stream(
            ProgressEvent(source="inner", msg=f"outlined {ev.topic}: {', '.join(sections)}")
        )
        return OutlineEvent(topic=ev.topic, sections=sections)

    @step
    async def draft(self, ctx: Context[Any], ev: OutlineEvent) -> StopEvent:
        sentences = []
        for section in ev.sections:
            await asyncio.sleep(0.01)
            sentences.append(f"The {section} of {ev.topic} is fascinating.")
            ctx.write_event_to_stream(ProgressEvent(source="inner", msg=f"drafted {section}"))
        return StopEvent(result=" ".join(sentences))


class OuterWorkflow(Workflow):
    """Delegates the research to an inner workflow, then publishes its draft."""

    def __init__(
        self,
        inner: InnerWorkflow | None = None,
        *,
        timeout: float | None = 45.0,
        verbose: bool = False,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        super().__init__(timeout, verbose, tracer_provider=tracer_provider)
        self.inner = inner or InnerWorkflow(timeout=timeout, tracer_provider=tracer_provider)

    @step
    async def research(self, ctx: Context[Any], ev: TopicStart) -> DraftEvent:
        ctx.write_event_to_stream(ProgressEvent(source="outer", msg=f"researching {ev.topic}"))
        handler = self.inner.run(topic=ev.topic)  # its run span nests under this step's span
        async for inner_ev in handler.stream_events():
            if not isinstance(inner_ev, StopEvent):  # the outer run has its own terminal event
                ctx.write_event_to_stream(inner_ev)
        text: str = await handler
        return DraftEvent(text=text)

    @step
    async def publish(self, ctx: Context[Any], ev: DraftEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(source="outer", msg="published"))
        return StopEvent(result=ev.text)


async def main() -> None:
    handler = OuterWorkflow(timeout=30).run(topic="whales")
    async for ev in handler.stream_events():
        if isinstance(ev, ProgressEvent):
            print(f"[{ev.source}] {ev.msg}")
    print(await handler)


if __name__ == "__main__":
    asyncio.run(main())
