"""Run stepstream's example workflows in a loop, so the observability stack shows data at once.

Every round runs, concurrently, the workflows of the example programs in ``examples/``
(streaming, fan-out, retries, nested, human in the loop: whichever exist) plus three
small workflows of its own that make the dashboards' error, retry and timeout panels
show something: a tool call that succeeds, one that succeeds after a retry, one that
fails after its retries, and a run that exceeds its deadline.

Each run starts inside a span of its own (``example_loop <Workflow>``), so the run span
is its child and the duration metrics recorded during the run carry that trace as an
exemplar (Prometheus exemplars link to Tempo through it).

Telemetry is set up by ``stepstream.configure_telemetry()``: with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (the compose file points it at the collector) spans,
metrics and log records go there over OTLP/HTTP; without it, to ``.stepstream/``.

Usage::

    python deploy/example_loop.py                 # forever, a round every 5 s
    python deploy/example_loop.py --rounds 3 --interval 1

``run_round()`` is also imported by the tests, which pass their own providers.
"""

# ruff: noqa: INP001 - a script copied into the example image, not a package

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import Field

import stepstream
from stepstream import (
    Context,
    Event,
    HumanResponseEvent,
    InputRequiredEvent,
    StartEvent,
    StopEvent,
    Workflow,
    step,
)
from stepstream.retry_policy import retry_policy, stop_after_attempt, wait_fixed

__all__ = [
    "DeadlineWorkflow",
    "Planned",
    "RoundResult",
    "ToolCallWorkflow",
    "load_examples",
    "main",
    "plan_round",
    "run_round",
]

log = logging.getLogger("stepstream.example_loop")

#: Where the example programs live: beside this file's parent, or $STEPSTREAM_EXAMPLES.
EXAMPLES_DIR = Path(
    os.environ.get("STEPSTREAM_EXAMPLES", Path(__file__).resolve().parent.parent / "examples")
)
#: Touched after every round; the container healthcheck reads its age.
_DEFAULT_HEARTBEAT = "/tmp/stepstream-example.heartbeat"  # noqa: S108 - inside the container
HEARTBEAT = Path(os.environ.get("STEPSTREAM_EXAMPLE_HEARTBEAT", _DEFAULT_HEARTBEAT))
RUN_TIMEOUT = 30.0


# -- the loop's own workflows: failures, retries and timeouts for the dashboards -------


class ToolCallStart(StartEvent):
    """How many attempts of the tool call fail before one succeeds."""

    failures: int = Field(default=0, ge=0)


class ToolProgress(Event):
    """One line of progress from the tool-call workflow."""

    msg: str


class ToolAnswer(Event):
    """What the tool returned."""

    answer: str


class ToolCallWorkflow(Workflow):
    """Calls a flaky tool (three attempts at most), then summarises its answer."""

    @step(retry_policy=retry_policy(wait=wait_fixed(0.02), stop=stop_after_attempt(3)))
    async def call_tool(self, ctx: Context[Any], ev: ToolCallStart) -> ToolAnswer:
        """Fail the first ``failures`` attempts with a ConnectionError."""
        attempt: int = await ctx.store.get("attempt", 0) + 1
        await ctx.store.set("attempt", attempt)
        ctx.write_event_to_stream(ToolProgress(msg=f"calling the tool, attempt {attempt}"))
        await asyncio.sleep(0.01)
        if attempt <= ev.failures:
            msg = f"tool unavailable (attempt {attempt})"
            raise ConnectionError(msg)
        return ToolAnswer(answer=f"42 (after {attempt} attempts)")

    @step
    async def summarise(self, ctx: Context[Any], ev: ToolAnswer) -> StopEvent:
        """Stream the answer and end the run."""
        ctx.write_event_to_stream(ToolProgress(msg=f"the tool said {ev.answer}"))
        return StopEvent(result=ev.answer)


class DeadlineWorkflow(Workflow):
    """A step that takes longer than the run may: every run ends with a timeout."""

    @step
    async def slow(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        """Sleep past the workflow's deadline."""
        ctx.write_event_to_stream(ToolProgress(msg="thinking for a long time"))
        await asyncio.sleep(5)
        return StopEvent(result="too late")


# -- the example programs --------------------------------------------------------------


def load_examples(directory: Path = EXAMPLES_DIR) -> dict[str, ModuleType]:
    """Import each known example program found in ``directory``, by its path."""
    found: dict[str, ModuleType] = {}
    for name in ("streaming", "fan_out", "retries", "nested", "human_in_the_loop"):
        path = directory / f"{name}.py"
        if not path.is_file():
            continue
        module_name = f"_stepstream_example_{name}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            log.exception("could not import example %s", path)
            del sys.modules[module_name]
            continue
        found[name] = module
    return found


@dataclass(frozen=True)
class RoundResult:
    """How the runs of one round ended: workflow class name -> status counts."""

    statuses: dict[str, Counter[str]]

    def total(self, status: str) -> int:
        """Return how many runs of the round ended with ``status``."""
        return sum(c[status] for c in self.statuses.values())


@dataclass(frozen=True)
class Planned:
    """One run of a round: the workflow, its start fields, whether to answer its question."""

    workflow: Workflow
    fields: dict[str, Any]
    answers_input: bool = False


def _example_runs(
    mods: dict[str, ModuleType], kw: dict[str, Any], tracer_provider: TracerProvider | None
) -> dict[str, Callable[[], Planned]]:
    """How to start each example program's workflow (the examples' APIs, by name)."""

    def nested() -> Planned:
        # OuterWorkflow takes no meter_provider: its inner workflow gets both providers.
        inner = mods["nested"].InnerWorkflow(**kw)
        outer = mods["nested"].OuterWorkflow(
            inner, timeout=RUN_TIMEOUT, tracer_provider=tracer_provider
        )
        return Planned(outer, {"topic": "octopuses"})

    return {
        "streaming": lambda: Planned(
            mods["streaming"].MyWorkflow(**kw), {"first_input": "Start the workflow."}
        ),
        "fan_out": lambda: Planned(mods["fan_out"].FanOutWorkflow(**kw), {"n": 8}),
        "retries": lambda: Planned(mods["retries"].FlakyWorkflow(**kw), {}),
        "nested": nested,
        "human_in_the_loop": lambda: Planned(
            mods["human_in_the_loop"].GreetingWorkflow(**kw), {}, answers_input=True
        ),
    }


def plan_round(
    mods: dict[str, ModuleType],
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> list[Planned]:
    """Return the runs of one round: each example found, then the loop's own workflows."""
    kw: dict[str, Any] = {
        "timeout": RUN_TIMEOUT,
        "tracer_provider": tracer_provider,
        "meter_provider": meter_provider,
    }
    plan: list[Planned] = []
    for name, make in _example_runs(mods, kw, tracer_provider).items():
        if name not in mods:
            continue
        try:
            plan.append(make())
        except Exception:  # an example changed its API: run the others
            log.exception("cannot start the workflow of example %s", name)
    # ok; ok after one retry; error after three attempts; a timeout.
    plan.extend(Planned(ToolCallWorkflow(**kw), {"failures": n}) for n in (0, 1, 3))
    plan.append(Planned(DeadlineWorkflow(**{**kw, "timeout": 0.3}), {}))
    return plan


async def _run_one(planned: Planned, tracer: trace.Tracer) -> tuple[str, str]:
    name = type(planned.workflow).__name__
    with tracer.start_as_current_span(f"example_loop {name}"):
        handler = planned.workflow.run(**planned.fields)
        async for ev in handler.stream_events():
            if planned.answers_input and isinstance(ev, InputRequiredEvent):
                handler.ctx.send_event(HumanResponseEvent(response="Ada"))
        try:
            await handler
        except stepstream.WorkflowTimeoutError:
            return name, "timeout"
        except stepstream.WorkflowCancelledError:
            return name, "cancelled"
        except Exception:  # noqa: BLE001 - a failed run is one of the outcomes shown
            return name, "error"
        return name, "ok"


async def run_round(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    examples: dict[str, ModuleType] | None = None,
) -> RoundResult:
    """Run every example workflow once, concurrently, and return how each run ended."""
    mods = load_examples() if examples is None else examples
    tracer = trace.get_tracer("stepstream.example_loop", tracer_provider=tracer_provider)
    plan = plan_round(mods, tracer_provider, meter_provider)
    outcomes = await asyncio.gather(*(_run_one(p, tracer) for p in plan))
    statuses: dict[str, Counter[str]] = {}
    for name, status in outcomes:
        statuses.setdefault(name, Counter())[status] += 1
    return RoundResult(statuses)


def _heartbeat() -> None:
    with contextlib.suppress(OSError):
        HEARTBEAT.touch()


async def _loop(rounds: int, interval: float, handle: stepstream.TelemetryHandle) -> int:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            running.add_signal_handler(sig, stop.set)
    mods = load_examples()
    log.info("examples found: %s", ", ".join(sorted(mods)) or "none")
    done = 0
    while not stop.is_set() and (rounds <= 0 or done < rounds):
        started = time.monotonic()
        done += 1
        try:
            result = await run_round(examples=mods)
        except Exception:  # keep the demo data flowing; the traceback is in the log
            log.exception("round %d failed", done)
        else:
            summary = ", ".join(
                f"{wf}: {dict(counts)}" for wf, counts in sorted(result.statuses.items())
            )
            log.info("round %d in %.1fs: %s", done, time.monotonic() - started, summary)
        await handle.aflush(timeout=10)
        _heartbeat()
        if rounds <= 0 or done < rounds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
    return done


def main(argv: list[str] | None = None) -> int:
    """Configure telemetry, run rounds until stopped (or ``--rounds``), flush, exit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=0, help="rounds to run (0: forever)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    handle = stepstream.configure_telemetry(service_name="stepstream-example")
    log.info("telemetry to %s", handle.endpoint or handle.directory)
    _heartbeat()
    try:
        asyncio.run(_loop(args.rounds, args.interval, handle))
    finally:
        handle.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
