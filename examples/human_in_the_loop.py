"""Human in the loop: a step asks a question, waits for the answer, and uses it.

``greet`` calls ``ctx.wait_for_event(HumanResponseEvent, waiter_event=InputRequiredEvent(
prefix=...))``: the question is written to the stream and the step is suspended until
the caller sends a ``HumanResponseEvent`` with ``handler.ctx.send_event(...)``.

Run it::

    python examples/human_in_the_loop.py           # main() asks on the terminal
    echo Ada | python examples/human_in_the_loop.py
    stepstream run examples/human_in_the_loop.py   # the CLI asks the InputRequiredEvent's prefix
"""

import asyncio
import sys
from typing import Any

from stepstream import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowCancelledError,
    step,
)

QUESTION = "What is your name? "


class ProgressEvent(Event):
    msg: str


class GreetingWorkflow(Workflow):
    """Asks for a name, then greets whoever answered."""

    @step
    async def greet(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="asking for a name"))
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix=QUESTION)
        )
        name = str(answer.get("response", "")).strip() or "stranger"
        ctx.write_event_to_stream(ProgressEvent(msg=f"got the answer {name!r}"))
        return StopEvent(result=f"Hello, {name}!")


async def main() -> int:
    handler = GreetingWorkflow(timeout=None).run()
    async for ev in handler.stream_events():
        if isinstance(ev, InputRequiredEvent):
            try:
                # input() blocks: read the terminal in a thread so the run keeps going.
                answer = await asyncio.to_thread(input, str(ev.get("prefix", "> ")))
            except EOFError:
                print("\nno answer on standard input; cancelling the run")
                await handler.cancel_run()
            else:
                handler.ctx.send_event(HumanResponseEvent(response=answer))
        elif isinstance(ev, ProgressEvent):
            print(f"[{ev.msg}]")
    try:
        print(await handler)
    except WorkflowCancelledError as exc:
        print(f"cancelled: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
