"""End to end: a caller's traceparent through ``stepstream serve`` into Arize Phoenix.

A real uvicorn ``stepstream serve tests/_served_app.py`` process exports OTLP to the
Phoenix of the ``phoenix`` fixture; a request carries a ``traceparent``; everything
asserted is read back from Phoenix's REST API: one trace from the caller's span through
the HTTP server span and the run span to the last step, each streamed event once.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from _live_server import ServeProcess
from _live_server import serve_process
from phoenix_fixture import PhoenixServer
from phoenix_fixture import fetch_spans
from phoenix_fixture import flatten_attributes

SERVER_SPAN = "POST /workflows/{name}/run"
RUN_SPAN = "invoke_workflow GreetingWorkflow"
STEP_SPANS = ("run_step first_step", "run_step second_step")
SPANS_TIMEOUT_S = 60.0
# The one line a `stepstream serve` process writes on stderr that is not a JSON log line
# (an export failure would be another).
BANNER = "serving "


def spans_of_trace(phoenix: PhoenixServer, trace_id: str) -> list[dict[str, Any]]:
    """Poll Phoenix until the trace holds its four spans and a second look finds no more."""
    wanted = 1 + 1 + len(STEP_SPANS)  # the server span, the run span, the steps
    deadline = time.monotonic() + SPANS_TIMEOUT_S
    previous: int | None = None
    while True:
        trace = [span for span in fetch_spans(phoenix) if span["context"]["trace_id"] == trace_id]
        if len(trace) >= wanted and previous == len(trace):
            for span in trace:
                span["attributes"] = flatten_attributes(span["attributes"])
                for event in span["events"]:
                    event["attributes"] = flatten_attributes(event["attributes"])
            return trace
        previous = len(trace) if len(trace) >= wanted else None
        assert time.monotonic() < deadline, (
            f"Phoenix holds {len(trace)} spans of trace {trace_id} after {SPANS_TIMEOUT_S:.0f} s: "
            f"{[span['name'] for span in trace]}\n{phoenix.log_tail()}"
        )
        time.sleep(0.5)


def ancestors(span: dict[str, Any], by_id: dict[str, dict[str, Any]]) -> list[str]:
    """The span ids above ``span``, nearest first, as far as the trace's spans reach."""
    found: list[str] = []
    parent = span["parent_id"]
    while parent is not None and parent not in found:
        found.append(parent)
        above = by_id.get(parent)
        parent = above["parent_id"] if above is not None else None
    return found


def run_greeting(server: ServeProcess, traceparent: str) -> tuple[dict[str, Any], list[int]]:
    """POST /run with ``traceparent``; return its body and the seqs the run streamed."""
    start = {"start_event": {"greeting": "hello", "name": "Phoenix"}}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post(
            "/workflows/greeting/run", json=start, headers={"traceparent": traceparent}
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        replay = http.get(
            f"/events/{body['handler_id']}", params={"sse": "false", "after_sequence": -1}
        )
        assert replay.status_code == 200, replay.text
    seqs = [json.loads(line)["seq"] for line in replay.text.splitlines()]
    return body, seqs


def test_a_callers_trace_through_the_server_as_stored_by_phoenix(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    """traceparent in: one trace, caller span → server span → run span → every step span."""
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with serve_process(
        cwd=tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT=phoenix.otlp_endpoint,
        # Phoenix is a trace backend only: it answers 405 to OTLP metrics and logs.
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    ) as server:
        body, streamed = run_greeting(server, f"00-{caller_trace}-{caller_span}-01")
        code = server.stop()  # a clean stop flushes the spans still batched
        assert code == 0, list(server.lines)
    lines = list(server.lines)
    assert all(line.startswith(("{", BANNER)) for line in lines), lines
    assert body["status"] == "completed"
    assert body["trace_id"] == caller_trace
    assert streamed == list(range(len(streamed)))
    assert len(streamed) == 3  # the InputEvent, the GreetEvent, the OutputEvent

    trace = spans_of_trace(phoenix, caller_trace)
    names = Counter(span["name"] for span in trace)
    assert names == Counter([SERVER_SPAN, RUN_SPAN, *STEP_SPANS]), names
    by_name = {span["name"]: span for span in trace}
    by_id = {span["context"]["span_id"]: span for span in trace}
    request, run = by_name[SERVER_SPAN], by_name[RUN_SPAN]
    request_id, run_id = request["context"]["span_id"], run["context"]["span_id"]

    assert request["parent_id"] == caller_span
    assert request["attributes"]["http.route"] == "/workflows/{name}/run"
    chain = ancestors(run, by_id)  # the run span descends from the request's, in the caller's
    assert request_id in chain, chain
    assert chain[-1] == caller_span, chain
    assert run["attributes"]["stepstream.run_id"] == body["run_id"]
    for name in STEP_SPANS:
        assert run_id in ancestors(by_name[name], by_id), name
        assert ancestors(by_name[name], by_id)[-1] == caller_span, name

    # Every span of the run, wherever Phoenix holds it, is in the caller's trace.
    of_run = [
        span
        for span in fetch_spans(phoenix)
        if flatten_attributes(span["attributes"]).get("stepstream.run_id") == body["run_id"]
    ]
    assert len(of_run) == 1 + len(STEP_SPANS)
    assert {span["context"]["trace_id"] for span in of_run} == {caller_trace}

    # Each streamed event is one span event: no seq twice, none missing, none duplicated.
    events = [(span["name"], event) for span in trace for event in span["events"]]
    seqs = [
        event["attributes"]["stepstream.event.seq"]
        for _, event in events
        if event["name"] == "stepstream.event"
    ]
    assert sorted(seqs) == streamed, events
    keys = [
        json.dumps([name, event["name"], event["timestamp"], event["attributes"]], sort_keys=True)
        for name, event in events
    ]
    assert len(keys) == len(set(keys)), events
