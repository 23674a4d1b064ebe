"""Resources: a dependency the runtime creates once and injects into the steps that ask.

A port of the resources example in the LlamaIndex Workflows guide: its ``Memory`` from
``llama_index.core.memory`` becomes a small in-file ``Memory`` (no LlamaIndex needed);
everything else is the guide's code with ``workflows`` renamed ``stepstream``. Both
steps declare ``memory: Annotated[Memory, Resource(get_memory)]``; the resource is
cached (the default), so the second step sees what the first one stored, and the span
of each step carries a ``stepstream.resources`` event with the resolution time.

Run it::

    python examples/resources.py
    stepstream run examples/resources.py
"""

import asyncio
from dataclasses import dataclass, field
from typing import Annotated

from stepstream import Workflow, step
from stepstream.events import Event, StartEvent, StopEvent
from stepstream.resource import Resource


@dataclass
class ChatMessage:
    role: str
    content: str


@dataclass
class Memory:
    """Keeps a conversation's messages (a stand-in for LlamaIndex's Memory)."""

    session_id: str
    messages: list[ChatMessage] = field(default_factory=list)

    async def aput(self, message: ChatMessage) -> None:
        self.messages.append(message)

    async def aget(self) -> list[ChatMessage]:
        return list(self.messages)


def get_memory() -> Memory:
    return Memory(session_id="user_id_123")


class SecondEvent(Event):
    msg: str


class WorkflowWithResource(Workflow):
    @step
    async def first_step(
        self,
        ev: StartEvent,
        memory: Annotated[Memory, Resource(get_memory)],
    ) -> SecondEvent:
        print("Memory before step 1", len(await memory.aget()), "message(s)")
        await memory.aput(ChatMessage(role="user", content="This is the first step"))
        print("Memory after step 1", len(await memory.aget()), "message(s)")
        return SecondEvent(msg="This is an input for step 2")

    @step
    async def second_step(
        self, ev: SecondEvent, memory: Annotated[Memory, Resource(get_memory)]
    ) -> StopEvent:
        print("Memory before step 2", len(await memory.aget()), "message(s)")
        await memory.aput(ChatMessage(role="user", content=ev.msg))
        print("Memory after step 2", len(await memory.aget()), "message(s)")
        return StopEvent(result=[m.content for m in await memory.aget()])


async def main() -> None:
    wf = WorkflowWithResource(timeout=10)
    result = await wf.run()
    print("Result:", result)


if __name__ == "__main__":
    asyncio.run(main())
