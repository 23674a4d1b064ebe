"""End to end against a real trace backend: the seed workflow's spans as Arize Phoenix stores them.

The seed example runs in a subprocess with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a
Phoenix started by the ``phoenix`` fixture; everything asserted here is read back from
Phoenix's REST API (GET /v1/projects/default/spans), not from the SDK.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from _helpers import EXAMPLES
from _helpers import run_command
from _helpers import without_otel
from phoenix_fixture import PhoenixServer
from phoenix_fixture import fetch_spans
from phoenix_fixture import flatten_attributes

RUN_SPAN = "invoke_workflow MyWorkflow"
STEPS = ("step_one", "step_two", "step_three")
EVENTS_IN_OUT = {
    "step_one": ("StartEvent", "FirstEvent"),
    "step_two": ("FirstEvent", "SecondEvent"),
    "step_three": ("SecondEvent", "StopEvent"),
}
SPANS_TIMEOUT_S = 60.0

# Runs examples/streaming.py's MyWorkflow with telemetry configured from the environment,
# and prints what the test compares with Phoenix: the run id and the streamed messages.
SEED_RUNNER = """\
import asyncio
import json
import sys

sys.path.insert(0, sys.argv[1])

import stepstream
from streaming import MyWorkflow, ProgressEvent


async def main() -> None:
    handle = stepstream.configure_telemetry(service_name="stepstream-phoenix-e2e")
    handler = MyWorkflow(timeout=30).run(first_input="Start the workflow.")
    messages = [ev.msg async for ev in handler.stream_events() if isinstance(ev, ProgressEvent)]
    result = await handler
    print(json.dumps({"run_id": handler.run_id, "messages": messages, "result": result}))
    handle.shutdown()


asyncio.run(main())
"""


def spans_of_run(phoenix: PhoenixServer, run_id: str) -> list[dict[str, Any]]:
    """Poll Phoenix until the run's trace has its run span and three step spans, then settle.

    The result is the trace's spans, with attributes (span and event) flattened.
    """
    deadline = time.monotonic() + SPANS_TIMEOUT_S
    previous: list[dict[str, Any]] | None = None
    while True:
        spans = [
            {**span, "attributes": flatten_attributes(span["attributes"])}
            for span in fetch_spans(phoenix)
        ]
        trace_ids = {
            span["context"]["trace_id"]
            for span in spans
            if span["attributes"].get("stepstream.run_id") == run_id
        }
        trace = [span for span in spans if span["context"]["trace_id"] in trace_ids]
        # Complete once 4 spans are there and a second look finds nothing more.
        if len(trace) >= 1 + len(STEPS) and previous is not None and len(previous) == len(trace):
            for span in trace:
                for event in span["events"]:
                    event["attributes"] = flatten_attributes(event["attributes"])
            return trace
        previous = trace if len(trace) >= 1 + len(STEPS) else None
        assert time.monotonic() < deadline, (
            f"Phoenix holds {len(trace)} spans of run {run_id} after {SPANS_TIMEOUT_S:.0f} s: "
            f"{[span['name'] for span in trace]}\n{phoenix.log_tail()}"
        )
        time.sleep(0.5)


def run_seed_workflow(phoenix: PhoenixServer, tmp_path: Path) -> dict[str, Any]:
    """Run the seed workflow exporting to Phoenix; return its run id, messages and result."""
    script = tmp_path / "run_seed.py"
    script.write_text(SEED_RUNNER, encoding="utf-8")
    env = without_otel(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.otlp_endpoint,
            # Phoenix is a trace backend only: it answers 405 to OTLP metrics and logs.
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        }
    )
    proc = run_command(sys.executable, script, EXAMPLES, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr  # an export failure would be reported here
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def assert_run_span(run: dict[str, Any], run_id: str) -> None:
    """The run span is the trace's root and names the run, its workflow and status."""
    attrs = run["attributes"]
    assert attrs["stepstream.run_id"] == run_id
    assert attrs["gen_ai.operation.name"] == "invoke_workflow"
    assert attrs["gen_ai.workflow.name"] == "MyWorkflow"
    assert attrs["stepstream.workflow"] == "MyWorkflow"
    assert attrs["stepstream.run.status"] == "ok"
    assert run["parent_id"] is None
    assert run["status_code"] != "ERROR"


def assert_step_spans(steps: dict[str, dict[str, Any]], run: dict[str, Any], run_id: str) -> None:
    """Each step span is a child of the run span and names its step, attempt and events."""
    assert sorted(steps) == sorted(f"run_step {name}" for name in STEPS)
    for name in STEPS:
        span = steps[f"run_step {name}"]
        attrs = span["attributes"]
        assert span["parent_id"] == run["context"]["span_id"], name
        assert span["context"]["trace_id"] == run["context"]["trace_id"], name
        assert span["status_code"] != "ERROR", name
        assert attrs["stepstream.run_id"] == run_id, name
        assert attrs["stepstream.workflow"] == "MyWorkflow", name
        assert attrs["stepstream.step"] == name
        assert attrs["stepstream.step.attempt"] == 1, name
        assert attrs["stepstream.step.status"] == "ok", name
        assert (attrs["stepstream.event.in"], attrs["stepstream.event.out"]) == EVENTS_IN_OUT[name]
        assert attrs["stepstream.events.streamed"] == len(span["events"]), name
    starts = [datetime.fromisoformat(steps[f"run_step {name}"]["start_time"]) for name in STEPS]
    assert starts == sorted(starts)


def assert_stream_events(steps: dict[str, dict[str, Any]], messages: list[str]) -> None:
    """Every streamed ProgressEvent is a span event on the step that wrote it, in order."""
    streamed: list[tuple[int, str, dict[str, Any]]] = []
    for name in STEPS:
        for event in steps[f"run_step {name}"]["events"]:
            assert event["name"] == "stepstream.event", (name, event)
            attrs = event["attributes"]
            assert attrs["stepstream.event.type"] == "ProgressEvent", (name, event)
            streamed.append((attrs["stepstream.event.seq"], name, event))
    streamed.sort(key=lambda item: item[0])
    assert len(streamed) == len(messages)
    assert [seq for seq, _, _ in streamed] == list(range(len(messages)))  # stream positions
    payloads = [json.loads(ev["attributes"]["stepstream.event.payload"]) for *_, ev in streamed]
    assert [payload["msg"] for payload in payloads] == messages
    writers = [name for _, name, _ in streamed]
    assert writers == ["step_one"] + ["step_two"] * (len(messages) - 2) + ["step_three"]
    stamps = [datetime.fromisoformat(ev["timestamp"]) for *_, ev in streamed]
    assert stamps == sorted(stamps)


def assert_terminal_event(run: dict[str, Any], streamed: int) -> None:
    """The run span carries one span event, the terminal StopEvent, after all the others."""
    assert len(run["events"]) == 1, run["events"]
    terminal = run["events"][0]
    assert terminal["name"] == "stepstream.event"
    assert terminal["attributes"]["stepstream.event.type"] == "StopEvent"
    assert terminal["attributes"]["stepstream.event.seq"] == streamed
    payload = json.loads(terminal["attributes"]["stepstream.event.payload"])
    assert payload == {"result": "Workflow complete."}


def test_seed_workflow_spans_as_stored_by_phoenix(phoenix: PhoenixServer, tmp_path: Path) -> None:
    """Phoenix receives the seed run as one run span, three step spans and every event."""
    report = run_seed_workflow(phoenix, tmp_path)
    run_id: str = report["run_id"]
    messages: list[str] = report["messages"]
    assert report["result"] == "Workflow complete."
    assert len(messages) > 2  # step one, the LLM's words, step three

    trace = spans_of_run(phoenix, run_id)
    runs = [span for span in trace if span["name"] == RUN_SPAN]
    assert len(runs) == 1, [span["name"] for span in trace]
    run = runs[0]
    steps = {span["name"]: span for span in trace if span is not run}
    assert len(trace) == 1 + len(STEPS), [span["name"] for span in trace]

    assert_run_span(run, run_id)
    assert_step_spans(steps, run, run_id)
    assert_stream_events(steps, messages)
    assert_terminal_event(run, len(messages))
