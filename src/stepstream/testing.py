"""Helpers for testing workflows: captured telemetry and a deterministic streaming text source.

``capture_telemetry()`` records the spans, span events, log lines and metrics of every
run started inside it, in memory, for assertions::

    with capture_telemetry() as tel:
        await MyWorkflow().run()
    assert [line["event_type"] for line in tel.lines("stream_event")] == ["ProgressEvent", ...]

``FakeStreamingLLM`` has the shape of a LlamaIndex LLM's streaming call, so code
written against ``await llm.astream_complete(prompt)`` runs offline unchanged::

    llm = FakeStreamingLLM()
    async for chunk in await llm.astream_complete("..."):
        print(chunk.delta, end="")
    # str(chunk) of the last chunk is the whole text
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stepstream.context import Context
from stepstream.events import Event, StartEvent
from stepstream.workflow import Workflow

if TYPE_CHECKING:
    from stepstream.telemetry._capture import CapturedTelemetry, capture_telemetry

__all__ = [
    "MOBY_DICK",
    "CapturedTelemetry",
    "CompletionResponse",
    "FakeStreamingLLM",
    "WorkflowTestResult",
    "WorkflowTestRunner",
    "capture_telemetry",
]


def __getattr__(name: str) -> Any:
    # Loads the OpenTelemetry SDK: only when a test asks for it.
    if name in {"CapturedTelemetry", "capture_telemetry"}:
        from stepstream.telemetry import _capture  # noqa: PLC0415

        value = getattr(_capture, name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


#: The opening paragraph of Herman Melville's *Moby-Dick* (1851), in the public domain.
MOBY_DICK = (
    "Call me Ishmael. Some years ago—never mind how long precisely—having little or no "
    "money in my purse, and nothing particular to interest me on shore, I thought I would "
    "sail about a little and see the watery part of the world. It is a way I have of "
    "driving off the spleen and regulating the circulation. Whenever I find myself growing "
    "grim about the mouth; whenever it is a damp, drizzly November in my soul; whenever I "
    "find myself involuntarily pausing before coffin warehouses, and bringing up the rear "
    "of every funeral I meet; and especially whenever my hypos get such an upper hand of "
    "me, that it requires a strong moral principle to prevent me from deliberately "
    "stepping into the street, and methodically knocking people's hats off—then, I account "
    "it high time to get to sea as soon as I can. This is my substitute for pistol and "
    "ball. With a philosophical flourish Cato throws himself upon his sword; I quietly "
    "take to the ship. There is nothing surprising in this. If they but knew it, almost "
    "all men in their degree, some time or other, cherish very nearly the same feelings "
    "towards the ocean with me."
)


@dataclass(frozen=True, slots=True)
class CompletionResponse:
    """One streamed chunk: ``delta`` is the new text, ``text`` all text so far."""

    text: str
    delta: str

    def __str__(self) -> str:
        return self.text


class FakeStreamingLLM:
    """Streams ``text`` word by word, each chunk after ``delay`` seconds (default 0)."""

    def __init__(self, text: str = MOBY_DICK, delay: float = 0.0, model: str = "fake") -> None:
        self.text = text
        self.delay = delay
        self.model = model
        self._words: tuple[str, ...] = tuple(re.findall(r"\S+\s*", text))

    async def astream_complete(self, prompt: str) -> AsyncIterator[CompletionResponse]:
        """Return an async iterator of chunks; ``prompt`` is ignored."""
        del prompt
        return self._stream()

    async def acomplete(self, prompt: str) -> CompletionResponse:
        """Return the whole text as one response; ``prompt`` is ignored."""
        del prompt
        if self.delay:
            await asyncio.sleep(self.delay)
        return CompletionResponse(text=self.text, delta=self.text)

    async def _stream(self) -> AsyncIterator[CompletionResponse]:
        text = ""
        for word in self._words:
            if self.delay:
                await asyncio.sleep(self.delay)
            text += word
            yield CompletionResponse(text=text, delta=word)


@dataclass
class WorkflowTestResult:
    """What :meth:`WorkflowTestRunner.run` saw: the streamed events, their counts, the result."""

    collected: list[Event]
    event_types: dict[type[Event], int]
    result: Any
    ctx: Context[Any] = field(repr=False)


class WorkflowTestRunner:
    """Runs a workflow to its end and collects what it streams (as in LlamaIndex's testing).

    ::

        result = await WorkflowTestRunner(MyWorkflow()).run(StartEvent(topic="x"))
        assert result.event_types[ProgressEvent] == 3
    """

    def __init__(self, workflow: Workflow) -> None:
        self._workflow = workflow

    async def run(
        self,
        start_event: StartEvent | None = None,
        ctx: Context[Any] | None = None,
        expose_internal: bool = True,
        exclude_events: list[type[Event]] | None = None,
    ) -> WorkflowTestResult:
        """Run with ``start_event`` (default ``StartEvent()``), streaming internal events too.

        Events whose exact type is in ``exclude_events`` are left out; what the run
        raises propagates.
        """
        handler = self._workflow.run(
            ctx=ctx, start_event=start_event if start_event is not None else StartEvent()
        )
        excluded = set(exclude_events or ())
        collected = [
            ev
            async for ev in handler.stream_events(expose_internal=expose_internal)
            if type(ev) not in excluded
        ]
        result = await handler
        return WorkflowTestResult(
            collected=collected,
            event_types=dict(Counter(type(ev) for ev in collected)),
            result=result,
            ctx=handler.ctx,
        )
