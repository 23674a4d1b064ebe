"""`stepstream traces push`: what it sends, captured by a loopback HTTP server.

A run is recorded by the embedded default (.stepstream/ in a temporary directory), then
pushed to a server on 127.0.0.1 that records each request. tests/test_full_stack.py
pushes to the real collector (which rejects malformed OTLP/JSON) and finds the run in
the backends; this test checks the log records line by line.
"""

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from _full_stack import app_env
from _full_stack import run_app
from _helpers import otlp_attrs
from _helpers import read_json_lines
from _helpers import stepstream_cli
from stepstream.telemetry import attributes as attrs

SERVICE = "stepstream-push-test"


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """A loopback server answering 200 to every POST; yields its URL and (path, body) list."""
    received: list[tuple[str, Any]] = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            assert self.headers["Content-Type"] == "application/json"
            received.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - hook signature
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_push_sends_the_spans_as_recorded_and_each_log_line_as_a_record(
    collector: tuple[str, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    """Span batches unchanged; one OTLP log record per line, under its trace's resource."""
    url, received = collector
    run_app("failed", "--rounds", "0", env=app_env(SERVICE, None), cwd=tmp_path, timeout=120)
    recorded = tmp_path / ".stepstream"
    done = stepstream_cli(
        "traces", "push", "--endpoint", url + "/", "--telemetry-dir", str(recorded), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert [body for path, body in received if path == "/v1/traces"] == read_json_lines(
        recorded / "traces.jsonl"
    )
    lines = read_json_lines(recorded / "logs.jsonl")
    records = [
        (otlp_attrs(rl["resource"]), record)
        for path, body in received
        if path == "/v1/logs"
        for rl in body["resourceLogs"]
        for scope in rl["scopeLogs"]
        for record in scope["logRecords"]
    ]
    assert len(records) == len(lines) > 0
    assert f"{len(lines)} log lines to {url}" in done.stderr
    for line, (resource, record) in zip(lines, records, strict=True):
        assert resource["service.name"] == SERVICE
        assert record["body"] == {"stringValue": line[attrs.KEY_EVENT]}
        assert record["severityText"] == line[attrs.KEY_LEVEL].upper()
        assert record["traceId"] == line[attrs.KEY_TRACE_ID]
        assert record["spanId"] == line[attrs.KEY_SPAN_ID]
        fields = otlp_attrs(record)
        assert attrs.KEY_TRACE_ID not in fields
        assert fields[attrs.KEY_RUN_ID] == line[attrs.KEY_RUN_ID]
        if line[attrs.KEY_EVENT] == attrs.LOG_STREAM_EVENT:
            assert fields[attrs.KEY_SEQ] == line[attrs.KEY_SEQ]
            assert fields[attrs.KEY_EVENT_TYPE] == line[attrs.KEY_EVENT_TYPE]


def test_push_without_logs_sends_spans_only(
    collector: tuple[str, list[tuple[str, Any]]], tmp_path: Path
) -> None:
    """--no-logs: nothing goes to /v1/logs."""
    url, received = collector
    run_app("failed", "--rounds", "0", env=app_env(SERVICE, None), cwd=tmp_path, timeout=120)
    done = stepstream_cli(
        "traces",
        "push",
        "--no-logs",
        "--endpoint",
        url,
        "--telemetry-dir",
        str(tmp_path / ".stepstream"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert {path for path, _ in received} == {"/v1/traces"}
