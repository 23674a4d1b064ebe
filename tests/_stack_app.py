"""A stepstream app for tests/test_full_stack.py: runs workflows against a real collector.

Telemetry goes where ``stepstream.configure_telemetry()`` sends it (the test sets
OTEL_EXPORTER_OTLP_ENDPOINT to the stack's collector, or leaves it unset for the
embedded default's .stepstream/ files). Prints one JSON line per recorded run and a
last JSON line with the totals.

    python _stack_app.py failed [--rounds R]
        R rounds of deploy/example_loop.py (every example, for the metrics and the
        dashboards), then two ToolCallWorkflow runs whose stream it records, one that
        fails (three failed attempts) and one that succeeds after a retry:
        {"kind", "trace_id", "run_id", "stream": [[type, seq], ...], "status"}
    python _stack_app.py series --runs N --interval S
        N short runs, one every S seconds, each in a span of its own, recording each
        run's trace id and how long the app waited for it (the collector may be killed
        meanwhile: the app must neither block nor raise).
"""

# ruff: noqa: T201 - its output is JSON lines on stdout, read by the tests

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry import trace

import stepstream
from _helpers import import_file
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step

ROOT = Path(__file__).resolve().parent.parent
example_loop = import_file(ROOT / "deploy" / "example_loop.py", "example_loop")


class Tick(Event):
    """Streamed by the series workflow."""

    n: int


class SeriesWorkflow(Workflow):
    """Two steps and two streamed events: a small run of the series."""

    @step
    async def first(self, ctx: Context[Any], ev: StartEvent) -> Tick:
        ctx.write_event_to_stream(Tick(n=0))
        return Tick(n=1)

    @step
    async def second(self, ctx: Context[Any], ev: Tick) -> StopEvent:
        ctx.write_event_to_stream(Tick(n=ev.n))
        return StopEvent(result=ev.n)


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


async def failed(rounds: int) -> None:
    for n in range(rounds):
        if n:  # metrics are exported every second: rate() needs samples apart
            await asyncio.sleep(1.5)
        await example_loop.run_round()
    # Three failed attempts (the run fails); one failed attempt, then the answer, so that
    # the summarise step's span links to the call_tool attempt that caused it.
    for kind, failures in (("failed", 3), ("retried", 1)):
        print(json.dumps({"kind": kind, **await _recorded_run(failures)}), flush=True)


async def _recorded_run(failures: int) -> dict[str, Any]:
    tracer = trace.get_tracer("stepstream.tests.stack_app")
    with tracer.start_as_current_span("stack_app run") as span:
        handler = example_loop.ToolCallWorkflow(timeout=30).run(failures=failures)
        stream = [[type(ev).__name__, seq] async for seq, ev in _numbered(handler)]
        try:
            await handler
        except Exception as exc:  # noqa: BLE001 - the run may be meant to fail
            status = type(exc).__name__
        else:
            status = "ok"
    return {
        "trace_id": _hex(span.get_span_context().trace_id),
        "run_id": handler.run_id,
        "stream": stream,
        "status": status,
    }


async def _numbered(handler: Any) -> Any:
    seq = 0
    async for ev in handler.stream_events():
        yield seq, ev
        seq += 1


async def series(runs: int, interval: float) -> None:
    tracer = trace.get_tracer("stepstream.tests.stack_app")
    waits = []
    errors = []
    for n in range(runs):
        started = time.monotonic()
        with tracer.start_as_current_span("stack_app series run") as span:
            try:
                await SeriesWorkflow(timeout=30).run()
            except Exception as exc:  # noqa: BLE001 - reported to the test
                errors.append(repr(exc))
        waited = time.monotonic() - started
        waits.append(waited)
        print(
            json.dumps(
                {
                    "n": n,
                    "trace_id": _hex(span.get_span_context().trace_id),
                    "at": time.time(),
                    "waited": waited,
                }
            ),
            flush=True,
        )
        await asyncio.sleep(max(0.0, interval - waited))
    print(json.dumps({"runs": runs, "max_wait": max(waits), "errors": errors}), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["failed", "series"])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--interval", type=float, default=0.25)
    args = parser.parse_args()
    handle = stepstream.configure_telemetry(service_name=os.environ.get("OTEL_SERVICE_NAME"))
    started = time.monotonic()
    try:
        if args.mode == "failed":
            asyncio.run(failed(args.rounds))
        else:
            asyncio.run(series(args.runs, args.interval))
    finally:
        flushed = time.monotonic()
        handle.shutdown(timeout=30)
        print(json.dumps({"ran": flushed - started, "shutdown": time.monotonic() - flushed}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
