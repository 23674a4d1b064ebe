"""Human in the loop across two requests: save the run's context, restore it later.

A port of the LlamaIndex Workflows guide's human-in-the-loop example, with
``workflows`` renamed ``stepstream``: in a web app the request that shows the prompt is
not the one that receives the answer. The first request runs until the workflow asks
for input, saves ``handler.ctx.to_dict()`` (here in a JSON file standing in for the
guide's ``db``) and cancels its handler; the second restores the context with
``Context.from_dict``, continues the run with ``workflow.run(ctx=...)`` and sends the
answer. The continued run is recorded in the same trace as the first, linked to it.

Run it as two processes::

    python examples/hitl_saved_context.py ask            # prints the prompt, saves the run
    python examples/hitl_saved_context.py answer 42      # continues it: "Result: 42"

or both in one go with ``python examples/hitl_saved_context.py``.
"""

import asyncio
import json
import sys
from pathlib import Path

from stepstream import Context, Workflow, step
from stepstream.events import HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent


class FileDb:
    """The guide's ``db``: saves and loads strings, one JSON file per key."""

    async def save(self, key: str, value: str) -> None:
        await asyncio.to_thread(Path(f"hitl-{key}.json").write_text, value)

    async def load(self, key: str) -> str:
        return await asyncio.to_thread(Path(f"hitl-{key}.json").read_text)


db = FileDb()


class NumberWorkflow(Workflow):
    @step
    async def ask(self, ev: StartEvent) -> InputRequiredEvent:
        return InputRequiredEvent(prefix="Enter a number: ")

    @step
    async def answer(self, ev: HumanResponseEvent) -> StopEvent:
        return StopEvent(result=ev.response)


workflow = NumberWorkflow()


async def first_request() -> str:
    """Run until the prompt, save the context, and stop this handler."""
    handler = workflow.run()
    prompt = ""
    async for event in handler.stream_events():
        if isinstance(event, InputRequiredEvent):
            prompt = event.prefix
            await db.save("run-123", json.dumps(handler.ctx.to_dict()))
            await handler.cancel_run()
            break
    return prompt


async def second_request(response: str) -> object:
    """Restore the saved context, continue the run and answer it."""
    ctx_dict = json.loads(await db.load("run-123"))
    restored_ctx = Context.from_dict(workflow, ctx_dict)
    handler = workflow.run(ctx=restored_ctx)
    await handler.send_event(HumanResponseEvent(response=response))
    return await handler


async def main(argv: list[str]) -> None:
    command = argv[0] if argv else "both"
    if command in {"ask", "both"}:
        print(await first_request())
    if command in {"answer", "both"}:
        answer = argv[1] if len(argv) > 1 else "42"
        print("Result:", await second_request(answer))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
