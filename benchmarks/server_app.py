"""The workflows both servers serve in the server benchmark, the same code but for the imports.

stepstream: ``stepstream serve benchmarks/server_app.py:WORKFLOWS``. The peer
(llama-agents-server 0.8.x): ``BENCH_SERVER_LIB=llama python -m uvicorn server_app:app
--app-dir benchmarks``, where ``app`` is the peer's ``WorkflowServer`` app behind a small
loop-lag probe of this file (stepstream serve has its own: ``STEPSTREAM_LOOP_LAG=1``).

- ``short``: one step, StartEvent to StopEvent (runs per second through ``/run``).
- ``stream``: waits for a ``HumanResponseEvent`` (the go signal, sent once the
  subscribers are connected), then writes ``n`` ``Tick`` events to the stream, each
  carrying the monotonic clock (ns) read just before ``write_event_to_stream``;
  ``rate`` > 0 paces them at that many per second, 0 sends them back to back (yielding
  to the loop after each, as a step awaiting an LLM's next token does).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

LIB = os.environ.get("BENCH_SERVER_LIB", "stepstream")

if LIB == "stepstream":
    from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
    from stepstream.events import HumanResponseEvent
else:  # the peer: llama-index-workflows under llama-agents-server, same API
    from workflows import Context, Workflow, step  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
    from workflows.events import (  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]
        Event,
        HumanResponseEvent,
        StartEvent,
        StopEvent,
    )


class Tick(Event):
    i: int
    t: int
    delta: str = "word "


class ShortFlow(Workflow):
    @step
    async def answer(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result="ok")


class StreamFlow(Workflow):
    @step
    async def emit(self, ctx: Context, ev: StartEvent) -> StopEvent:
        await ctx.wait_for_event(HumanResponseEvent)
        n, rate = int(ev.get("n", 1000)), float(ev.get("rate", 0))
        started = time.monotonic()
        for i in range(n):
            ctx.write_event_to_stream(Tick(i=i, t=time.monotonic_ns()))
            if rate > 0:
                await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
            else:
                await asyncio.sleep(0)
        return StopEvent(result=n)


class NapFlow(Workflow):
    @step
    async def nap(self, ev: StartEvent) -> StopEvent:
        await asyncio.sleep(float(ev.get("seconds", 1.0)))
        return StopEvent(result="rested")


WORKFLOWS = {
    "short": ShortFlow(timeout=60),
    "stream": StreamFlow(timeout=None),
    "nap": NapFlow(timeout=None),  # benchmarks/scale.py: a step in flight at a kill
}


class LagProbe:
    """ASGI wrapper for the peer: measures how late the loop wakes a 5 ms timer.

    ``GET /debug/loop-lag`` answers ``{"max_ms", "p99_ms", "samples"}`` since the last
    ``?reset=true``, like stepstream serve's probe.
    """

    INTERVAL = 0.005

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:  # ends with the process (uvicorn exits on SIGINT/SIGTERM)
            due = time.monotonic() + self.INTERVAL
            await asyncio.sleep(self.INTERVAL)
            self.samples.append(max(0.0, time.monotonic() - due))
            if len(self.samples) > 200_000:
                del self.samples[:100_000]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.task is None and scope["type"] == "http":
            self.task = asyncio.get_running_loop().create_task(self._probe())
        if scope["type"] == "http" and scope["path"] == "/debug/loop-lag":
            import json  # noqa: PLC0415

            data = sorted(self.samples)
            body = {
                "max_ms": data[-1] * 1000 if data else 0.0,
                "p99_ms": data[int(len(data) * 0.99)] * 1000 if data else 0.0,
                "samples": len(data),
            }
            if b"reset=true" in scope.get("query_string", b""):
                self.samples.clear()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": json.dumps(body).encode()})
            return
        await self.app(scope, receive, send)


if LIB != "stepstream":
    from llama_agents.server import WorkflowServer  # type: ignore[import-not-found,unused-ignore]

    _peer = WorkflowServer()
    for _name, _workflow in WORKFLOWS.items():
        # The go signal is only waited for, not in a step's signature: declare it.
        _peer.add_workflow(_name, _workflow, additional_events=[HumanResponseEvent])
    app = LagProbe(_peer.app)
