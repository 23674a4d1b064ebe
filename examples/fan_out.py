"""Fan out, fan in: one step sends N work items, four workers process them, a join sums them.

``dispatch`` sends one ``WorkItem`` per item with ``ctx.send_event``; ``square`` (at most
four invocations at a time, ``@step(num_workers=4)``) streams a progress line per item and
returns a ``Result``; ``join`` buffers the results with ``ctx.collect_events`` and, once all
N have arrived, returns their sum. In the trace, the span of the join invocation that
completes the collection carries one span link per worker span whose result it collected.

Run it::

    python examples/fan_out.py            # 8 items
    python examples/fan_out.py 20         # 20 items
    stepstream run examples/fan_out.py --input n=12
"""

import asyncio
import sys
from typing import Any

from pydantic import Field

from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class FanOutStart(StartEvent):
    """How many items to fan out."""

    n: int = Field(default=8, ge=1)


class WorkItem(Event):
    index: int
    value: int


class Result(Event):
    index: int
    square: int


class ProgressEvent(Event):
    msg: str


class FanOutWorkflow(Workflow):
    """Squares 0..n-1 with four concurrent workers and returns the squares and their sum."""

    @step
    async def dispatch(self, ctx: Context[Any], ev: FanOutStart) -> WorkItem | None:
        await ctx.store.set("n", ev.n)
        for i in range(ev.n):
            ctx.send_event(WorkItem(index=i, value=i))
        ctx.write_event_to_stream(ProgressEvent(msg=f"dispatched {ev.n} items"))
        return None

    @step(num_workers=4)
    async def square(self, ctx: Context[Any], ev: WorkItem) -> Result:
        await asyncio.sleep(0.01 * (ev.index % 3))  # uneven work: results arrive out of order
        result = ev.value * ev.value
        msg = f"item {ev.index}: {ev.value} squared is {result}"
        ctx.write_event_to_stream(ProgressEvent(msg=msg))
        return Result(index=ev.index, square=result)

    @step
    async def join(self, ctx: Context[Any], ev: Result) -> StopEvent | None:
        n: int = await ctx.store.get("n")
        results = ctx.collect_events(ev, [Result] * n)
        if results is None:
            return None  # not all results are in yet
        done = sorted((r for r in results if isinstance(r, Result)), key=lambda r: r.index)
        squares = [r.square for r in done]
        ctx.write_event_to_stream(ProgressEvent(msg=f"joined {len(squares)} results"))
        return StopEvent(result={"squares": squares, "sum": sum(squares)})


async def main(n: int = 8) -> None:
    handler = FanOutWorkflow(timeout=30).run(n=n)
    async for ev in handler.stream_events():
        if isinstance(ev, ProgressEvent):
            print(ev.msg)
    result = await handler
    print(f"squares: {result['squares']}")
    print(f"sum: {result['sum']}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 8))
