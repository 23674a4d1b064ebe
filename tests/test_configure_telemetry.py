"""configure_telemetry() and the unconfigured default, each in its own Python process.

configure_telemetry() sets process-global providers, so every test here writes a script
to tmp_path and runs it with this interpreter; the test process never configures anything.
"""

import http.server
import json
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from _helpers import SCRIPT_NAME
from _helpers import last_json_line
from _helpers import otlp_attrs
from _helpers import otlp_metric_names
from _helpers import otlp_spans
from _helpers import read_json_lines
from _helpers import run_script
from stepstream.telemetry import attributes as attrs

ISO_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"

SEED_RUN = """
import asyncio
import json
from _helpers import MyWorkflow


async def run_seed() -> tuple[str, list[str]]:
    handler = MyWorkflow(timeout=30).run(first_input="Start the workflow.")
    types = [type(ev).__name__ async for ev in handler.stream_events()]
    assert await handler == "Workflow complete."
    return handler.run_id, types
"""

CHATTY = """
import asyncio
import json
from typing import Any
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Note(Event):
    i: int


class Chatty(Workflow):
    @step
    async def chatter(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for i in range(ev["n"]):
            ctx.write_event_to_stream(Note(i=i))
            if i % 50 == 0:
                await asyncio.sleep(0)
        return StopEvent(result="ok")


async def run_chatty(n: int) -> int:
    handler = Chatty(timeout=30).run(n=n)
    count = 0
    async for _ in handler.stream_events():
        count += 1
    assert await handler == "ok"
    return count
"""


def seed_script(
    tmp_path: Path, body: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run SEED_RUN followed by ``body`` as a script in tmp_path."""
    return run_script(tmp_path, SEED_RUN + body, env)


def assert_left_nothing(proc: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    """The script wrote nothing to stderr and no file next to itself."""
    assert proc.stderr == ""
    assert files_in(tmp_path) == [SCRIPT_NAME]


def files_in(path: Path) -> list[str]:
    """Names of the entries of ``path``, sorted."""
    return sorted(p.name for p in path.iterdir())


def spans_by_name(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The spans of an OTLP/JSON trace file, grouped by name."""
    out: dict[str, list[dict[str, Any]]] = {}
    for span in otlp_spans(path):
        out.setdefault(span["name"], []).append(span)
    return out


# -- no configuration -------------------------------------------------------------------


def test_unconfigured_seed_run_prints_nothing_and_writes_no_file(tmp_path: Path) -> None:
    """With no configuration, a seed run adds no output to the script's own and writes no file."""
    proc = seed_script(
        tmp_path,
        """
run_id, types = asyncio.run(run_seed())
print(f"script: {len(types)} events")
""",
    )
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"script: \d+ events\n", proc.stdout), proc.stdout
    assert_left_nothing(proc, tmp_path)


# -- the embedded default ---------------------------------------------------------------


def test_configure_telemetry_writes_traces_logs_and_metrics_files(tmp_path: Path) -> None:
    """Without an endpoint, traces.jsonl, logs.jsonl and metrics.jsonl land in the directory."""
    proc = seed_script(
        tmp_path,
        """
from stepstream.telemetry import configure_telemetry

handle = configure_telemetry(directory="telemetry")
run_id, types = asyncio.run(run_seed())
handle.shutdown()
print(json.dumps({"run_id": run_id, "types": types}))
""",
    )
    summary = last_json_line(proc)
    assert proc.stderr == ""
    folder = tmp_path / "telemetry"
    assert files_in(folder) == ["logs.jsonl", "metrics.jsonl", "traces.jsonl"]
    types: list[str] = summary["types"]

    spans = spans_by_name(folder / "traces.jsonl")
    (run,) = spans["invoke_workflow MyWorkflow"]
    steps = [spans[f"run_step {name}"][0] for name in ("step_one", "step_two", "step_three")]
    assert sum(len(v) for v in spans.values()) == 4
    assert otlp_attrs(run)[attrs.RUN_ID] == summary["run_id"]
    assert otlp_attrs(run)["stepstream.run.status"] == "ok"
    for span in steps:
        assert span["parentSpanId"] == run["spanId"]
        assert span["traceId"] == run["traceId"]
    assert [link["spanId"] for link in steps[1]["links"]] == [steps[0]["spanId"]]
    recorded = [
        otlp_attrs(ev)["stepstream.event.type"]
        for span in steps
        for ev in span["events"]
        if ev["name"] == "stepstream.event"
    ]
    assert recorded == types[:-1]

    logs = read_json_lines(folder / "logs.jsonl")
    for line in logs:
        assert {"timestamp", "level", "logger", "event"} <= set(line), line
        assert re.fullmatch(ISO_UTC, line["timestamp"]), line
        assert line["logger"] == "stepstream"
    streamed = [line for line in logs if line["event"] == "stream_event"]
    assert [line["event_type"] for line in streamed] == types
    assert [line["seq"] for line in streamed] == list(range(len(types)))
    assert {line["trace_id"] for line in streamed} == {run["traceId"]}
    assert {line["run_id"] for line in logs} == {summary["run_id"]}
    assert [line["event"] for line in logs][-1] == "run_finished"

    assert {
        "stepstream.run.duration",
        "stepstream.step.duration",
        "stepstream.events.streamed",
        "stepstream.runs.active",
    } <= otlp_metric_names(folder / "metrics.jsonl")


def test_configure_telemetry_is_idempotent(tmp_path: Path) -> None:
    """A second configure_telemetry() call returns the first handle and sets up nothing new."""
    proc = run_script(
        tmp_path,
        """
import json
from stepstream.telemetry import configure_telemetry

first = configure_telemetry(directory="first")
second = configure_telemetry(directory="second", service_name="other")
print(json.dumps({"same": second is first, "directory": str(second.directory)}))
first.shutdown()
""",
    )
    summary = last_json_line(proc)
    assert summary == {"same": True, "directory": "first"}
    assert proc.stderr == ""
    assert files_in(tmp_path) == ["first", SCRIPT_NAME]


def test_default_directory_is_dot_stepstream(tmp_path: Path) -> None:
    """configure_telemetry() without a directory writes its files to ./.stepstream."""
    proc = seed_script(
        tmp_path,
        """
from stepstream.telemetry import configure_telemetry

handle = configure_telemetry()
asyncio.run(run_seed())
handle.shutdown()
print(json.dumps({"ok": True}))
""",
    )
    assert last_json_line(proc) == {"ok": True}
    assert files_in(tmp_path / ".stepstream") == ["logs.jsonl", "metrics.jsonl", "traces.jsonl"]
    assert "run_step step_two" in spans_by_name(tmp_path / ".stepstream" / "traces.jsonl")


def test_otel_sdk_disabled_sets_up_nothing(tmp_path: Path) -> None:
    """With OTEL_SDK_DISABLED=true configure_telemetry() sets no provider and writes nothing."""
    proc = seed_script(
        tmp_path,
        """
from opentelemetry import metrics, trace
from stepstream.telemetry import configure_telemetry

handle = configure_telemetry(directory="telemetry")
run_id, types = asyncio.run(run_seed())
print(json.dumps({
    "tracer_provider": handle.tracer_provider is None,
    "meter_provider": handle.meter_provider is None,
    "log_writer": handle.log_writer is None,
    "global_tracer_provider": type(trace.get_tracer_provider()).__name__,
    "global_meter_provider": type(metrics.get_meter_provider()).__name__,
    "events": len(types),
}))
handle.shutdown()
""",
        env={"OTEL_SDK_DISABLED": "true"},
    )
    summary = last_json_line(proc)
    assert summary["tracer_provider"] is True
    assert summary["meter_provider"] is True
    assert summary["log_writer"] is True
    assert summary["global_tracer_provider"] == "ProxyTracerProvider"
    assert summary["global_meter_provider"] == "_ProxyMeterProvider"
    assert summary["events"] > 100
    assert_left_nothing(proc, tmp_path)


def test_existing_tracer_provider_is_kept_with_a_telemetry_warning(tmp_path: Path) -> None:
    """An application's TracerProvider is kept, with a TelemetryWarning, and receives the spans."""
    proc = seed_script(
        tmp_path,
        """
import warnings
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from stepstream.telemetry import TelemetryWarning, configure_telemetry

exporter = InMemorySpanExporter()
app_provider = TracerProvider()
app_provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(app_provider)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    handle = configure_telemetry(directory="telemetry")
asyncio.run(run_seed())
handle.shutdown()
print(json.dumps({
    "warnings": [
        [issubclass(w.category, TelemetryWarning), str(w.message)] for w in caught
    ],
    "handle_tracer_provider": handle.tracer_provider is None,
    "global_is_app": trace.get_tracer_provider() is app_provider,
    "spans": sorted(s.name for s in exporter.get_finished_spans()),
}))
""",
    )
    summary = last_json_line(proc)
    assert len(summary["warnings"]) == 1
    is_telemetry_warning, message = summary["warnings"][0]
    assert is_telemetry_warning is True
    assert "TracerProvider" in message
    assert summary["handle_tracer_provider"] is True
    assert summary["global_is_app"] is True
    assert summary["spans"] == sorted(
        [
            "invoke_workflow MyWorkflow",
            "run_step step_one",
            "run_step step_two",
            "run_step step_three",
        ]
    )
    assert not (tmp_path / "telemetry" / "traces.jsonl").exists()


# -- limits and payloads --------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "kept"),
    [
        pytest.param({}, 500, id="raised-default"),
        pytest.param({"OTEL_SPAN_EVENT_COUNT_LIMIT": "10"}, 10, id="env-limit-10"),
    ],
)
def test_span_event_limit_is_raised_unless_set_in_the_environment(
    tmp_path: Path, env: dict[str, str], kept: int
) -> None:
    """A step writing 500 events keeps all 500 span events, or 10 with the env limit at 10."""
    proc = run_script(
        tmp_path,
        CHATTY
        + """
from stepstream.telemetry import configure_telemetry

handle = configure_telemetry(directory="telemetry")
count = asyncio.run(run_chatty(500))
handle.shutdown()
print(json.dumps({"count": count}))
""",
        env=env,
    )
    assert last_json_line(proc) == {"count": 501}
    folder = tmp_path / "telemetry"
    (span,) = spans_by_name(folder / "traces.jsonl")["run_step chatter"]
    events = [ev for ev in span["events"] if ev["name"] == "stepstream.event"]
    assert len(events) == kept
    seqs = [otlp_attrs(ev)["stepstream.event.seq"] for ev in events]
    assert seqs == sorted(set(seqs))
    assert set(seqs) <= set(range(500))
    assert otlp_attrs(span)[attrs.EVENTS_STREAMED] == 500
    assert span.get("droppedEventsCount", 0) == 500 - kept
    logs = read_json_lines(folder / "logs.jsonl")
    assert len([line for line in logs if line["event"] == "stream_event"]) == 501


def test_payload_limit_truncates_span_event_payloads(tmp_path: Path) -> None:
    """payload_limit=50 cuts span event payloads at 50 characters; log lines keep them whole."""
    proc = run_script(
        tmp_path,
        """
import asyncio
import json
from typing import Any
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
from stepstream.telemetry import configure_telemetry


class Big(Event):
    text: str


class BigWriter(Workflow):
    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Big(text="x" * 200))
        return StopEvent(result="ok")


async def main() -> str:
    handler = BigWriter(timeout=30).run()
    async for _ in handler.stream_events():
        pass
    return await handler


handle = configure_telemetry(directory="telemetry", payload_limit=50)
print(json.dumps({"result": asyncio.run(main())}))
handle.shutdown()
""",
    )
    assert last_json_line(proc) == {"result": "ok"}
    full = json.dumps({"text": "x" * 200}, separators=(",", ":"))
    expected = full[:50] + f"...[truncated {len(full) - 50} chars]"
    folder = tmp_path / "telemetry"
    (span,) = spans_by_name(folder / "traces.jsonl")["run_step work"]
    assert otlp_attrs(span["events"][0])["stepstream.event.payload"] == expected
    logs = read_json_lines(folder / "logs.jsonl")
    big = [line for line in logs if line.get("event_type") == "Big"]
    assert [line["payload"] for line in big] == [full]


# -- flushing and shutting down ---------------------------------------------------------


def test_aflush_exports_everything_and_shutdown_closes_the_handle(tmp_path: Path) -> None:
    """await aflush() returns True with the run on disk; shutdown() is idempotent and final."""
    proc = seed_script(
        tmp_path,
        """
from pathlib import Path
from stepstream.telemetry import configure_telemetry

folder = Path("telemetry")


def lines(name: str) -> list[dict]:
    return [json.loads(x) for x in (folder / name).read_text().splitlines() if x.strip()]


async def main() -> dict:
    run_id, types = await run_seed()
    flushed = await handle.aflush()
    spans = [
        s["name"]
        for line in lines("traces.jsonl")
        for rs in line["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
    ]
    return {
        "flushed": flushed,
        "spans": len(spans),
        "log_events": [line["event"] for line in lines("logs.jsonl")][-1:],
    }


handle = configure_telemetry(directory="telemetry")
summary = asyncio.run(main())
handle.shutdown()
handle.shutdown()
logs_after_shutdown = len(lines("logs.jsonl"))
asyncio.run(run_seed())
summary["log_lines_grew"] = len(lines("logs.jsonl")) != logs_after_shutdown
summary["metrics"] = (folder / "metrics.jsonl").stat().st_size > 0
print(json.dumps(summary))
""",
    )
    summary = last_json_line(proc)
    assert summary["flushed"] is True
    assert summary["spans"] == 4
    assert summary["log_events"] == ["run_finished"]
    assert summary["log_lines_grew"] is False
    assert summary["metrics"] is True


# -- an unreachable collector -----------------------------------------------------------


def closed_port() -> int:
    """A loopback port that nothing listens on (bound, noted, closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_collector_neither_raises_nor_loses_stream_events(tmp_path: Path) -> None:
    """With the OTLP endpoint on a closed port, a 200-event run streams everything, promptly."""
    port = closed_port()
    proc = run_script(
        tmp_path,
        CHATTY
        + """
import time
from stepstream.telemetry import configure_telemetry

handle = configure_telemetry()
began = time.perf_counter()
count = asyncio.run(run_chatty(200))
elapsed = time.perf_counter() - began
# The exporters keep retrying the dead collector for their whole budget (10 s by
# default); shutdown() waits for them at most the given time.
handle.shutdown(timeout=1.0)
print(json.dumps({"count": count, "elapsed": elapsed, "endpoint": handle.endpoint}))
""",
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"},
    )
    assert proc.returncode == 0, proc.stderr
    summary = last_json_line(proc)
    assert summary["count"] == 201
    assert summary["endpoint"] == f"http://127.0.0.1:{port}"
    assert summary["elapsed"] < 2
    assert files_in(tmp_path) == [SCRIPT_NAME]


class _Capture(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        self.batches: dict[str, list[int]] = {"/v1/traces": [], "/v1/logs": []}
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _CaptureHandler)


class _CaptureHandler(http.server.BaseHTTPRequestHandler):
    server: _Capture

    def do_POST(self) -> None:
        """Count the spans or log records of one OTLP/protobuf export; answer 200."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/v1/traces":
            spans = ExportTraceServiceRequest.FromString(body).resource_spans
            n = sum(len(s.spans) for r in spans for s in r.scope_spans)
        elif self.path == "/v1/logs":
            logs = ExportLogsServiceRequest.FromString(body).resource_logs
            n = sum(len(s.log_records) for r in logs for s in r.scope_logs)
        else:
            n = 0
        with self.server.lock:
            self.server.batches.setdefault(self.path, []).append(n)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Quiet."""


def test_otlp_export_keeps_every_record_of_a_burst_in_small_prompt_batches(
    tmp_path: Path,
) -> None:
    """300 concurrent runs write 3,000 log lines and 600 spans at once: every one reaches
    the collector, in batches of at most 64 (not the SDK's 512)."""
    capture = _Capture()
    thread = threading.Thread(target=capture.serve_forever, daemon=True)
    thread.start()
    try:
        proc = run_script(
            tmp_path,
            CHATTY
            + """
import time
from stepstream.telemetry import configure_telemetry

async def burst() -> float:
    await asyncio.gather(*(run_chatty(5) for _ in range(300)))
    return time.perf_counter()

handle = configure_telemetry()
began = time.perf_counter()
ended = asyncio.run(burst())
time.sleep(0.5)
print(json.dumps({"burst_s": ended - began}), flush=True)
handle.shutdown(timeout=10.0)
""",
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{capture.server_address[1]}"},
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        capture.shutdown()
        capture.server_close()
        thread.join(5)
    logs, traces = capture.batches["/v1/logs"], capture.batches["/v1/traces"]
    # Per run: run_started, step_started, 5 + 1 stream_event, step_finished, run_finished.
    per_run = 2 + 6 + 2
    assert sum(logs) == 300 * per_run, logs
    assert sum(traces) == 300 * 2  # a run span and a step span each
    assert max(logs) <= 64
    assert max(traces) <= 64
