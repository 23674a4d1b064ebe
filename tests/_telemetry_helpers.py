"""Shared helpers for the telemetry tests: in-memory SDK providers, the seed workflow, scripts.

Everything here goes through the public API. The providers are handed to each Workflow
(``tracer_provider=`` / ``meter_provider=``); nothing sets a process-global provider.
"""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry.context import Context as OtelContext
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from stepstream import (
    Context,
    Event,
    StartEvent,
    StopEvent,
    Workflow,
    WorkflowHandler,
    step,
)
from stepstream.retry_policy import retry_policy, stop_after_attempt, wait_fixed
from stepstream.telemetry import attributes as attrs
from stepstream.testing import FakeStreamingLLM

W = TypeVar("W", bound=Workflow)

TESTS_DIR = Path(__file__).resolve().parent
HEX32 = r"[0-9a-f]{32}"
HEX16 = r"[0-9a-f]{16}"


# -- the seed workflow (examples/streaming.py, with an instant fake LLM) ---------------


class FirstEvent(Event):
    first_output: str


class SecondEvent(Event):
    second_output: str
    response: str


class ProgressEvent(Event):
    msg: str


class MyWorkflow(Workflow):
    """The seed workflow of examples/streaming.py; its fake LLM streams without delay."""

    @step
    async def step_one(self, ctx: Context[Any], ev: StartEvent) -> FirstEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step one is happening"))
        return FirstEvent(first_output="First step complete.")

    @step
    async def step_two(self, ctx: Context[Any], ev: FirstEvent) -> SecondEvent:
        llm = FakeStreamingLLM(model="gpt-4o-mini", delay=0)
        generator = await llm.astream_complete("Please give me the first 3 paragraphs.")
        text = ""
        async for response in generator:
            ctx.write_event_to_stream(ProgressEvent(msg=response.delta))
            text = str(response)
        return SecondEvent(second_output="Second step complete", response=text)

    @step
    async def step_three(self, ctx: Context[Any], ev: SecondEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="Step three is happening"))
        return StopEvent(result="Workflow complete.")


SEED_STEPS = ("step_one", "step_two", "step_three")


async def outcome(handler: WorkflowHandler) -> BaseException | None:
    """Await the run and return what it raised (None when it succeeded)."""
    try:
        async with asyncio.timeout(3):
            await handler
    except Exception as exc:  # noqa: BLE001 - the raised error is what the test inspects
        return exc
    return None


# -- in-memory SDK ----------------------------------------------------------------------


class SpanCounter(SpanProcessor):
    """Records the id of every span started and every span ended."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []

    def on_start(self, span: Span, parent_context: OtelContext | None = None) -> None:
        """Remember that ``span`` started."""
        self.started.append(span.context.span_id)

    def on_end(self, span: ReadableSpan) -> None:
        """Remember that ``span`` ended."""
        self.ended.append(span.context.span_id)


class Telemetry:
    """A TracerProvider and a MeterProvider recording in memory, for one test."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.exporter = InMemorySpanExporter()
        self.counter = SpanCounter()
        self.tracer_provider = TracerProvider(
            span_limits=SpanLimits(max_events=max_events), shutdown_on_exit=False
        )
        self.tracer_provider.add_span_processor(self.counter)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)

    def workflow(self, cls: type[W], timeout: float | None = 5) -> W:
        """Instantiate ``cls`` recording into these providers."""
        return cls(
            timeout=timeout,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
        )

    def spans(self) -> list[ReadableSpan]:
        """Every finished span, in end order."""
        return list(self.exporter.get_finished_spans())

    def stepstream_spans(self) -> list[ReadableSpan]:
        """The finished spans stepstream created (its instrumentation scope only)."""
        return [s for s in self.spans() if _scope_name(s.instrumentation_scope) == "stepstream"]

    def named(self, name: str) -> list[ReadableSpan]:
        """The finished spans called ``name``, in start order."""
        found = [s for s in self.spans() if s.name == name]
        return sorted(found, key=lambda s: s.start_time or 0)

    def one(self, name: str) -> ReadableSpan:
        """The single finished span called ``name``."""
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name!r}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        """Names of every finished span."""
        return [s.name for s in self.spans()]

    def metrics(self) -> dict[str, Metric]:
        """The metrics collected so far, by name."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
        }

    def shutdown(self) -> None:
        """Release both providers."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _scope_name(scope: InstrumentationScope | None) -> str | None:
    return scope.name if scope is not None else None


def run_span_name(workflow: str) -> str:
    """The contract's run span name, built from the constant."""
    return f"{attrs.RUN_SPAN_PREFIX} {workflow}"


def step_span_name(step_name: str) -> str:
    """The contract's step span name, built from the constant."""
    return f"{attrs.STEP_SPAN_PREFIX} {step_name}"


def attr(span: ReadableSpan, key: str) -> Any:
    """The attribute ``key`` of ``span`` (KeyError naming the span when absent)."""
    values = span.attributes or {}
    if key not in values:
        msg = f"span {span.name!r} has no attribute {key!r}; it has {sorted(values)}"
        raise KeyError(msg)
    return values[key]


def span_id(span: ReadableSpan) -> int:
    """The span id of ``span``."""
    value: int = span.context.span_id
    return value


def trace_id(span: ReadableSpan) -> int:
    """The trace id of ``span``."""
    value: int = span.context.trace_id
    return value


def parent_id(span: ReadableSpan) -> int | None:
    """The span id of ``span``'s parent, or None for a root span."""
    return span.parent.span_id if span.parent is not None else None


def stream_span_events(span: ReadableSpan) -> list[dict[str, Any]]:
    """The stepstream.event span events of ``span``, each as its attributes plus ``time``."""
    return [
        {**(ev.attributes or {}), "time": ev.timestamp}
        for ev in span.events
        if ev.name == attrs.STREAM_EVENT
    ]


def expected_stream(events: Sequence[Event]) -> list[tuple[str, int, str]]:
    """(type, seq, JSON payload) of each event the caller saw in the stream."""
    return [(type(ev).__name__, i, ev.model_dump_json()) for i, ev in enumerate(events)]


def recorded_stream(span_events: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, str]]:
    """(type, seq, payload) of recorded stream span events."""
    return [(e[attrs.EVENT_TYPE], e[attrs.EVENT_SEQ], e[attrs.EVENT_PAYLOAD]) for e in span_events]


# -- subprocesses ---------------------------------------------------------------------

SCRIPT_NAME = "script.py"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any OTEL_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.pop("PYTHONWARNINGS", None)
    env.update(extra or {})
    return env


def run_script(
    tmp_path: Path,
    source: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Write ``source`` to tmp_path/script.py and run it there with this interpreter."""
    script = tmp_path / SCRIPT_NAME
    script.write_text(textwrap.dedent(source), encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def last_json_line(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON summary a script printed as its last stdout line."""
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines, f"no output; stderr: {proc.stderr}"
    summary: dict[str, Any] = json.loads(lines[-1])
    return summary


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON Lines file, parsed."""
    text = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def otlp_spans(path: Path) -> list[dict[str, Any]]:
    """The spans of an OTLP/JSON Lines trace file (resourceSpans/scopeSpans/spans)."""
    return [
        span
        for line in read_json_lines(path)
        for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"]
        for span in ss["spans"]
    ]


def otlp_attrs(item: Mapping[str, Any]) -> dict[str, Any]:
    """An OTLP/JSON attribute list as a plain dict (intValue strings become ints)."""
    out: dict[str, Any] = {}
    for kv in item.get("attributes", []):
        value = kv["value"]
        if "intValue" in value:
            out[kv["key"]] = int(value["intValue"])
        elif "stringValue" in value:
            out[kv["key"]] = value["stringValue"]
        else:
            out[kv["key"]] = next(iter(value.values()))
    return out


def otlp_metric_names(path: Path) -> set[str]:
    """Names of the metrics in an OTLP/JSON Lines metrics file."""
    return {
        metric["name"]
        for line in read_json_lines(path)
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for metric in sm["metrics"]
    }


# -- workflows shared by the tracing, logging and metrics tests -------------------------


class Task(Event):
    pass


class Flaky(Workflow):
    """The second step fails on its first attempt and succeeds on the retry."""

    @step
    async def begin(self, ctx: Context[Any], ev: StartEvent) -> Task:
        return Task()

    @step(retry_policy=retry_policy(wait=wait_fixed(0), stop=stop_after_attempt(3)))
    async def flaky(self, ctx: Context[Any], ev: Task) -> StopEvent:
        tries: int = await ctx.store.get("tries", 0) + 1
        await ctx.store.set("tries", tries)
        if tries == 1:
            msg = "transient"
            raise ConnectionError(msg)
        return StopEvent(result=tries)


class Slow(Workflow):
    """Announces itself on the stream, then sleeps far longer than any test waits."""

    @step
    async def dawdle(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ProgressEvent(msg="started"))
        await asyncio.sleep(10)
        return StopEvent(result="late")
