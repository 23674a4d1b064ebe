"""End to end: a durable run killed with SIGKILL and resumed, as stored by Arize Phoenix.

A real ``stepstream serve --durable`` process (tests/_durable_served_app.py, SQLite in
the test's directory) exports OTLP to the Phoenix of the ``phoenix`` fixture. A caller
starts the three-step ``chain`` with a ``traceparent``; while step two waits for its gate
file the server is killed with SIGKILL (no flush), started again on the same database,
and the run finishes there. What docs/durable.md ("The trace continues") promises is
then read back from Phoenix: one trace, the caller's; the resumed run span marked as
such; the re-run step marked replayed; no streamed event recorded twice as a span event.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from _live_server import TESTS_DIR
from _live_server import ServeProcess
from _otlp_tee import Tee
from _otlp_tee import otlp_tee
from phoenix_fixture import PhoenixServer
from phoenix_fixture import fetch_spans
from phoenix_fixture import flatten_attributes

pytest.importorskip("dbos")

APP = TESTS_DIR / "_durable_served_app.py"
SERVER_SPAN = "POST /workflows/{name}/run-nowait"
RUN_SPAN = "invoke_workflow Chain"
TIMEOUT_S = 60.0


def serve(directory: Path, endpoint: str) -> ServeProcess:
    """``stepstream serve --durable`` on the app in ``directory``, exporting to ``endpoint``."""
    return ServeProcess(
        APP,
        "--durable",
        cwd=directory,
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            # Phoenix is a trace backend only: it answers 405 to OTLP metrics and logs.
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            # Ended spans leave within 0.1 s, so the killed server's are in Phoenix before
            # the kill (the test waits for them): the SDK's 5 s would only make it slower.
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )


def poll(check: Callable[[], bool], what: str, phoenix: PhoenixServer) -> None:
    """Poll ``check`` until it holds, for at most TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{phoenix.log_tail()}"
        time.sleep(0.1)


def spans_of_trace(phoenix: PhoenixServer, trace_id: str) -> list[dict[str, Any]]:
    """The spans Phoenix holds of ``trace_id``, attributes flattened."""
    found = [span for span in fetch_spans(phoenix) if span["context"]["trace_id"] == trace_id]
    for span in found:
        span["attributes"] = flatten_attributes(span["attributes"])
        for event in span["events"]:
            event["attributes"] = flatten_attributes(event["attributes"])
    return found


def settled_trace(
    phoenix: PhoenixServer, trace_id: str, names: Counter[str]
) -> list[dict[str, Any]]:
    """Poll Phoenix until the trace holds at least ``names`` and a second look finds no more."""
    deadline = time.monotonic() + TIMEOUT_S
    previous: int | None = None
    while True:
        trace = spans_of_trace(phoenix, trace_id)
        if not names - Counter(span["name"] for span in trace) and previous == len(trace):
            return trace
        previous = len(trace)
        assert time.monotonic() < deadline, (
            f"Phoenix holds {sorted(s['name'] for s in trace)} of trace {trace_id} after "
            f"{TIMEOUT_S:.0f} s, not {sorted(names.elements())}\n{phoenix.log_tail()}"
        )
        time.sleep(0.5)


def streamed(url: str, handler_id: str, count: int) -> list[dict[str, Any]]:
    """The run's first ``count`` streamed events (fewer if its stream ends), as NDJSON lines."""
    found: list[dict[str, Any]] = []
    params = {"sse": "false", "after_sequence": "-1"}
    with (
        httpx.Client(timeout=TIMEOUT_S) as client,
        client.stream("GET", f"{url}/events/{handler_id}", params=params) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.strip():
                found.append(json.loads(line))
            if len(found) == count:
                break
    return found


def result(url: str, handler_id: str) -> dict[str, Any]:
    """``GET /results/{handler_id}`` once the run has ended."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        response = httpx.get(f"{url}/results/{handler_id}", timeout=30)
        if response.status_code != 202:
            assert response.status_code == 200, response.text
            found: dict[str, Any] = response.json()
            return found
        assert time.monotonic() < deadline, f"{handler_id} did not end: {response.json()}"
        time.sleep(0.1)


def nanoseconds(iso: str) -> int:
    """Phoenix's ISO 8601 timestamp (microseconds) in nanoseconds since the epoch."""
    moment = datetime.fromisoformat(iso)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def labels(lines: list[dict[str, Any]]) -> list[str]:
    """Each streamed line's label (its type for other events)."""
    return [line["value"].get("label", line["type"]) for line in lines]


def kill_and_resume(
    directory: Path, tee: Tee, phoenix: PhoenixServer, caller_trace: str, caller_span: str
) -> tuple[str, list[dict[str, Any]]]:
    """Start the chain with a traceparent, kill -9 the server in step two, restart it on
    the same database, let the run finish and stop cleanly; the run's id and stream."""
    # The Phoenix of the session holds other tests' runs: this one's id is its own.
    handler_id = f"chain-{secrets.token_hex(4)}"
    first = serve(directory, tee.endpoint)
    try:
        started = httpx.post(
            f"{first.url}/workflows/chain/run-nowait",
            json={"handler_id": handler_id, "start_event": {"x": 4}},
            headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"},
            timeout=30,
        )
        assert started.status_code == 200, started.text
        run_id = started.json()["run_id"]
        assert run_id == handler_id  # a durable handler's id is its run's id
        # Step two streamed two:0 and waits for its gate: step one's checkpoint is
        # recorded (no step starts before the checkpoints queued ahead of it).
        before = streamed(first.url, handler_id, 3)
        # The spans that ended (the request's, step one's) are exported before the kill.
        poll(
            lambda: (
                {SERVER_SPAN, "run_step one"}
                <= {span["name"] for span in spans_of_trace(phoenix, caller_trace)}
            ),
            "the first attempt's ended spans in Phoenix",
            phoenix,
        )
    finally:
        first.proc.kill()  # SIGKILL: no shutdown, no flush of any kind
        first.proc.wait(timeout=10)
        first.stop()
    assert labels(before) == ["one:0", "one:1", "two:0"]

    second = serve(directory, tee.endpoint)
    try:
        (directory / "gate").touch()
        assert result(second.url, handler_id)["result"] == {"total": 52}
        whole = streamed(second.url, handler_id, 8)
    finally:
        code = second.stop()  # a clean stop flushes the spans still batched
    assert code == 0, list(second.lines)
    assert [line["seq"] for line in whole] == list(range(7))
    # two:0 twice: step two was in flight at the kill and ran again (at least once).
    assert labels(whole) == ["one:0", "one:1", "two:0", "two:0", "two:1", "three:0", "StopEvent"]
    return run_id, whole


def test_a_durable_run_killed_and_resumed_is_one_trace_in_phoenix(
    phoenix: PhoenixServer, tmp_path: Path
) -> None:
    """kill -9 in step two, restart: one trace, resumed run span, replayed step, no event twice."""
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_tee(phoenix.otlp_endpoint) as tee:
        run_id, whole = kill_and_resume(tmp_path, tee, phoenix, caller_trace, caller_span)
        sent = [span for span in tee.sent() if span.trace_id == caller_trace]
    expected = Counter([SERVER_SPAN, "run_step one", RUN_SPAN, "run_step two", "run_step three"])
    trace = settled_trace(phoenix, caller_trace, expected)
    names = Counter(span["name"] for span in trace)
    # The first run span and step two's first span were open at the kill: lost with the
    # process, by design. Everything else is here, once.
    assert names == expected, names

    # Every span of the run that Phoenix holds is in the caller's trace.
    of_run = [
        span
        for span in fetch_spans(phoenix)
        if flatten_attributes(span["attributes"]).get("stepstream.run_id") == run_id
    ]
    assert {span["context"]["trace_id"] for span in of_run} == {caller_trace}
    assert len(of_run) == 4, [span["name"] for span in of_run]  # the run's and the steps'

    by_name = {span["name"]: span for span in trace}
    request, resumed = by_name[SERVER_SPAN], by_name[RUN_SPAN]
    assert request["parent_id"] == caller_span
    # The first run span (lost) was the request span's child and step one's parent; the
    # resumed run span is its child.
    first_run_span = by_name["run_step one"]["parent_id"]
    assert first_run_span not in {span["context"]["span_id"] for span in trace}
    assert resumed["parent_id"] == first_run_span
    attributes = resumed["attributes"]
    assert attributes["stepstream.run_id"] == run_id
    assert attributes["stepstream.run.resumed"] is True
    assert attributes["stepstream.run.attempt"] == 2
    # The previous attempt last recorded something (two:0) after step one began, and
    # before the resumed run span began: the gap between is the outage.
    last_recorded = int(attributes["stepstream.run.last_checkpoint_ns"])
    assert nanoseconds(by_name["run_step one"]["start_time"]) <= last_recorded
    assert last_recorded < nanoseconds(resumed["start_time"])
    # Phoenix keeps no links; the resumed run span left the server with one, to the
    # first run span.
    (resumed_sent,) = [span for span in sent if span.name == RUN_SPAN]
    assert resumed_sent.span_id == resumed["context"]["span_id"]
    assert resumed_sent.links == [(caller_trace, first_run_span)]
    # Phoenix holds every span of the trace that was sent, and the killed server never
    # sent the spans open at the kill.
    assert sorted(span.span_id for span in sent) == sorted(
        span["context"]["span_id"] for span in trace
    )
    for name in ("run_step two", "run_step three"):
        assert by_name[name]["parent_id"] == resumed["context"]["span_id"], name
    # The step re-run after the crash is marked replayed; the others are not.
    assert by_name["run_step two"]["attributes"]["stepstream.step.replayed"] is True
    assert "stepstream.step.replayed" not in by_name["run_step one"]["attributes"]
    assert "stepstream.step.replayed" not in by_name["run_step three"]["attributes"]

    # Each streamed event is a span event at most once, on the span of what streamed it,
    # with what the stream holds at its seq. seq 2 (two:0, written before the kill) was on
    # step two's first span, which never ended: lost with it, and not emitted again after
    # the restart (docs/durable.md: nothing recorded before the crash is). Every other seq
    # is here exactly once.
    events = [(span["name"], event) for span in trace for event in span["events"]]
    placed = sorted(
        (
            event["attributes"]["stepstream.event.seq"],
            name,
            json.loads(event["attributes"]["stepstream.event.payload"]),
        )
        for name, event in events
        if event["name"] == "stepstream.event"
    )
    assert [(seq, name) for seq, name, _ in placed] == [
        (0, "run_step one"),
        (1, "run_step one"),
        (3, "run_step two"),
        (4, "run_step two"),
        (5, "run_step three"),
        (6, RUN_SPAN),  # the StopEvent
    ], events
    by_seq = {line["seq"]: line["value"] for line in whole}
    assert all(payload == by_seq[seq] for seq, _, payload in placed), (placed, whole)
    keys = [
        json.dumps([name, event["name"], event["timestamp"], event["attributes"]], sort_keys=True)
        for name, event in events
    ]
    assert len(keys) == len(set(keys)), events
