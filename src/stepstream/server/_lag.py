"""An optional probe of the event loop's responsiveness: how late it wakes a short timer.

Off unless asked for (``WorkflowServer(loop_lag_probe=True)``, or ``STEPSTREAM_LOOP_LAG=1``
for ``stepstream serve``). While the server runs, a task sleeps ``INTERVAL`` seconds
again and again and notes how much later than asked it woke: that is how long any
callback (a request, a run's step, a stream write) waited behind the work ahead of it.
``GET /debug/loop-lag`` answers ``{"max_ms", "p99_ms", "samples"}`` over the samples
kept (the last ``KEEP``) since the last ``?reset=true``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from starlette.requests import Request
from starlette.responses import Response

from stepstream.server._api import json_response

__all__ = ["LoopLagProbe"]


class LoopLagProbe:
    """Samples the loop's lag while :meth:`run` runs; serves them at ``/debug/loop-lag``."""

    INTERVAL = 0.005
    KEEP = 100_000

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=self.KEEP)

    async def run(self) -> None:
        """Sample until cancelled (the server's lifespan cancels it)."""
        while True:
            due = time.monotonic() + self.INTERVAL
            await asyncio.sleep(self.INTERVAL)
            self.samples.append(max(0.0, time.monotonic() - due))

    def summary(self) -> dict[str, float | int]:
        """The largest and 99th-percentile lag in ms, and how many samples they cover."""
        data = sorted(self.samples)
        if not data:
            return {"max_ms": 0.0, "p99_ms": 0.0, "samples": 0}
        return {
            "max_ms": round(data[-1] * 1000, 3),
            "p99_ms": round(data[min(len(data) - 1, int(len(data) * 0.99))] * 1000, 3),
            "samples": len(data),
        }

    async def endpoint(self, request: Request) -> Response:
        """``GET /debug/loop-lag[?reset=true]``: the summary, then (with reset) start afresh."""
        body = self.summary()
        if request.query_params.get("reset", "false").lower() == "true":
            self.samples.clear()
        return json_response(body)
