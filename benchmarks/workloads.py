"""The benchmark workloads, identical for stepstream and the reference but for the imports.

Run one measurement in a fresh process::

    python benchmarks/workloads.py --lib stepstream --mode on --workload W1 --n 100000

It prints one JSON object: wall seconds, process CPU seconds, peak RSS and the
workload's own figures. ``--lib llama`` imports llama-index-workflows instead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

LIB = "stepstream"
if "--lib" in sys.argv and sys.argv[sys.argv.index("--lib") + 1] == "llama":
    LIB = "llama"

if LIB == "stepstream":
    from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
else:  # the reference: llama-index-workflows, same API
    from workflows import Context, Workflow, step  # type: ignore[no-redef,import-not-found,unused-ignore]
    from workflows.events import Event, StartEvent, StopEvent  # type: ignore[no-redef,import-not-found,assignment,unused-ignore]


# -- the same fake streaming LLM on both sides ---------------------------------------------

_TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, having little money"


class _Chunk:
    __slots__ = ("delta", "text")

    def __init__(self, text: str, delta: str) -> None:
        self.text = text
        self.delta = delta

    def __str__(self) -> str:
        return self.text


class FakeLLM:
    """Streams a short fixed text word by word, with no delay."""

    async def astream_complete(self, prompt: str) -> AsyncIterator[_Chunk]:
        del prompt
        return self._gen()

    async def _gen(self) -> AsyncIterator[_Chunk]:
        text = ""
        for word in _TEXT.split(" "):
            text += word + " "
            yield _Chunk(text, word + " ")


# -- workflows ----------------------------------------------------------------------------


class Tick(Event):
    i: int


class FirstEvent(Event):
    first_output: str


class SecondEvent(Event):
    second_output: str
    response: str


class ProgressEvent(Event):
    msg: str


class StreamWorkflow(Workflow):
    @step
    async def produce(self, ctx: Context, ev: StartEvent) -> StopEvent:
        write = ctx.write_event_to_stream
        for i in range(ev.n):
            write(Tick(i=i))
        return StopEvent(result=ev.n)


class SeedWorkflow(Workflow):
    @step
    async def step_one(self, ctx: Context, ev: StartEvent) -> FirstEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step one is happening"))
        return FirstEvent(first_output="First step complete.")

    @step
    async def step_two(self, ctx: Context, ev: FirstEvent) -> SecondEvent:
        llm = FakeLLM()
        generator = await llm.astream_complete("Please give me the first 3 paragraphs.")
        async for response in generator:
            ctx.write_event_to_stream(ProgressEvent(msg=response.delta))
        return SecondEvent(second_output="Second step complete", response=str(response))

    @step
    async def step_three(self, ctx: Context, ev: SecondEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step three is happening"))
        return StopEvent(result="Workflow complete.")


class Item(Event):
    i: int


class Done(Event):
    i: int


# The join's expected list, built once per size: building `[Done] * n` on every call
# would itself be O(n) per arriving event in the workload's own code, on both sides.
_EXPECTED: dict[int, list[type[Event]]] = {}


def _expected(n: int) -> list[type[Event]]:
    found = _EXPECTED.get(n)
    if found is None:
        found = _EXPECTED[n] = [Done] * n
    return found


class FanInWorkflow(Workflow):
    @step
    async def start(self, ctx: Context, ev: StartEvent) -> Item | None:
        await ctx.store.set("n", ev.n)
        for i in range(ev.n):
            ctx.send_event(Item(i=i))
        return None

    @step(num_workers=8)
    async def work(self, ev: Item) -> Done:
        return Done(i=ev.i)

    @step
    async def join(self, ctx: Context, ev: Done) -> StopEvent | None:
        n = await ctx.store.get("n")
        got = ctx.collect_events(ev, _expected(n))
        if got is None:
            return None
        return StopEvent(result=len(got))


class Answer(Event):
    value: str


class ParkedWorkflow(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(Answer, timeout=600)
        return StopEvent(result=answer.value)


# -- measurements -------------------------------------------------------------------------


async def _drain(handler: Any) -> int:
    count = 0
    async for _ in handler.stream_events():
        count += 1
    await handler
    return count


async def w1(n: int) -> dict[str, Any]:
    count = await _drain(StreamWorkflow(timeout=None).run(n=n))
    return {"events": count, "per_event_unit": n}


async def w2(n: int) -> dict[str, Any]:
    wf = SeedWorkflow(timeout=None)
    events = 0
    for _ in range(n):
        events += await _drain(wf.run(first_input="go"))
    return {"runs": n, "events": events}


async def w3(n: int) -> dict[str, Any]:
    result = await FanInWorkflow(timeout=None).run(n=n)
    if result != n:
        raise RuntimeError(result)
    return {"fan_in": n}


async def w4(n: int) -> dict[str, Any]:
    wf = SeedWorkflow(timeout=None)
    counts = await asyncio.gather(*(_drain(wf.run(first_input="go")) for _ in range(n)))
    return {"runs": n, "events": sum(counts)}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:  # noqa: PTH123 - Linux-only harness
        return int(f.read().split()[1]) * resource.getpagesize()


async def w5_parked(n: int) -> dict[str, Any]:
    wf = ParkedWorkflow(timeout=None)
    gc.collect()
    before = _rss_bytes()
    handlers = [wf.run() for _ in range(n)]
    await asyncio.sleep(0)
    for _ in range(20):  # let every run reach its wait
        await asyncio.sleep(0.01)
    gc.collect()
    parked = _rss_bytes()
    for h in handlers:
        h.ctx.send_event(Answer(value="ok"))
    results = await asyncio.gather(*handlers)
    if any(r != "ok" for r in results):
        raise RuntimeError(results)
    return {"parked_runs": n, "rss_per_run_bytes": (parked - before) / n}


async def w5_leak(n: int) -> dict[str, Any]:
    """RSS after n // 10 runs and after n, as a running service sees it.

    Nothing is flushed: the export thread works as it does in production (its queue is
    bounded by the batch size). A flush in between would itself move RSS: run from
    another thread, it grows a fresh malloc arena that is not given back.
    """
    wf = SeedWorkflow(timeout=None)
    marks: dict[int, int] = {}
    for i in range(1, n + 1):
        await _drain(wf.run(first_input="go"))
        if i in (n // 10, n):
            gc.collect()
            marks[i] = _rss_bytes()
    small, large = marks[n // 10], marks[n]
    return {"rss_after_small": small, "rss_after_large": large, "growth": large / small - 1}


WORKLOADS: dict[str, Callable[[int], Awaitable[dict[str, Any]]]] = {
    "W1": w1,
    "W2": w2,
    "W3": w3,
    "W4": w4,
    "W5park": w5_parked,
    "W5leak": w5_leak,
}


def _telemetry_on(directory: str) -> Callable[[], None]:
    if LIB == "stepstream":
        import stepstream  # noqa: PLC0415

        handle = stepstream.configure_telemetry(directory=directory)
        return handle.shutdown
    from llama_index.observability.otel import LlamaIndexOpenTelemetry  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: PLC0415

    class NullExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    otel = LlamaIndexOpenTelemetry(span_exporter=NullExporter(), span_processor="batch")
    otel.start_registering()
    from opentelemetry import trace  # noqa: PLC0415

    provider: Any = trace.get_tracer_provider()
    return provider.shutdown  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lib", choices=["stepstream", "llama"], default="stepstream")
    parser.add_argument("--mode", choices=["off", "on"], default="off")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--n", type=int, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stepstream-bench-") as tmp:
        shutdown = _telemetry_on(tmp) if args.mode == "on" else None
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        extra = asyncio.run(WORKLOADS[args.workload](args.n))
        wall = time.perf_counter() - t0
        cpu_run = time.process_time() - cpu0
        if shutdown is not None:
            shutdown()  # exports what is still queued: its CPU counts too
        cpu = time.process_time() - cpu0
        sizes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_run_s": cpu_run,
                "cpu_s": cpu,
                "peak_rss_bytes": peak,
                "files": sizes,
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
