"""The whole stack, for real: run the examples through the collector, find them in every backend.

Runs against deploy/compose where a Docker daemon answers, and against deploy/local's
processes everywhere else (tests/_full_stack.py: the programs are built from their Go
modules by .ci/build-stack.sh, cached by version). tests/_stack_app.py runs rounds of
deploy/example_loop.py plus two recorded ToolCallWorkflow runs (one failed, one
retried) under a service name of the test's own, with OTLP to the collector on
127.0.0.1:4318; the tests then ask each backend's API for what the runs sent. The
fault tests (tests/test_full_stack_faults.py) kill and restart parts of the same stack.
"""

import functools
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _dashboard_queries import CLUSTER_DASHBOARD
from _dashboard_queries import dashboard_queries
from _dashboard_queries import substitute
from _full_stack import COLLECTOR
from _full_stack import GRAFANA
from _full_stack import JAEGER
from _full_stack import LOKI
from _full_stack import PROMETHEUS
from _full_stack import TEMPO
from _full_stack import Stack
from _full_stack import app_env
from _full_stack import jaeger_trace
from _full_stack import poll
from _full_stack import request
from _full_stack import run_app
from _full_stack import tags
from _helpers import stepstream_cli
from stepstream.telemetry import attributes as attrs
from test_prometheus_queries import EXPECTED_LABELS


@dataclass(frozen=True)
class Runs:
    """The test app's recorded runs, by kind ("failed", "retried")."""

    service: str
    recorded: dict[str, dict[str, Any]]

    @property
    def failed(self) -> dict[str, Any]:
        return self.recorded["failed"]


@pytest.fixture(scope="module")
def runs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Three rounds of the examples, then the recorded runs, all through the collector."""
    del stack
    service = f"stepstream-fullstack-{uuid.uuid4().hex[:8]}"
    lines = run_app(
        "failed",
        "--rounds",
        "3",
        env=app_env(service),
        cwd=tmp_path_factory.mktemp("app"),
        timeout=240,
    )
    recorded = {line["kind"]: line for line in lines if "kind" in line}
    assert recorded["failed"]["status"] == "ConnectionError", recorded
    assert recorded["retried"]["status"] == "ok", recorded
    return Runs(service, recorded)


def _values(runs: Runs) -> dict[str, str]:
    return {
        "service": runs.service,
        "workflow": ".*",
        "step": ".*",
        "run_id": runs.failed["run_id"],
        "trace_id": runs.failed["trace_id"],
        "__rate_interval": "1m",
        "__auto": "1m",
    }


def _span_events(trace: dict[str, Any]) -> list[tuple[str, int]]:
    """(event type, seq) of every stepstream.event span event of a Jaeger trace."""
    found = []
    for span in trace["spans"]:
        for log in span["logs"]:
            fields = tags(log)
            if fields.get("event") == attrs.STREAM_EVENT:
                found.append((fields[attrs.EVENT_TYPE], int(fields[attrs.EVENT_SEQ])))
    return sorted(found, key=lambda item: item[1])


def test_jaeger_has_the_failed_run_whole(runs: Runs) -> None:
    """Run span, every attempt as its child, every streamed event with its seq, the error."""
    _assert_whole_failed_run_in_jaeger(runs.failed, runs.service)


def _assert_whole_failed_run_in_jaeger(run: dict[str, Any], service: str) -> None:
    trace = poll("the failed run in Jaeger", functools.partial(jaeger_trace, run["trace_id"]))
    spans = {span["spanID"]: span for span in trace["spans"]}
    [run_span] = [
        s for s in spans.values() if s["operationName"] == "invoke_workflow ToolCallWorkflow"
    ]
    run_tags = tags(run_span)
    assert run_tags[attrs.RUN_ID] == run["run_id"]
    assert run_tags[attrs.RUN_STATUS] == attrs.STATUS_ERROR
    assert run_tags["otel.status_code"] == "ERROR"
    assert run_tags[attrs.ERROR_TYPE] == "ConnectionError"
    attempts = [s for s in spans.values() if s["operationName"] == "run_step call_tool"]
    assert sorted(tags(s)[attrs.STEP_ATTEMPT] for s in attempts) == [1, 2, 3]
    for attempt in attempts:
        parents = [r for r in attempt["references"] if r["refType"] == "CHILD_OF"]
        assert [r["spanID"] for r in parents] == [run_span["spanID"]]
        assert tags(attempt)["otel.status_code"] == "ERROR"
    assert _span_events(trace) == [tuple(item) for item in run["stream"]]
    assert trace["processes"][run_span["processID"]]["serviceName"] == service


def test_jaeger_has_the_causal_link_of_the_retried_run(runs: Runs) -> None:
    """The summarise step's span links to the call_tool attempt whose event it received."""
    run = runs.recorded["retried"]
    trace = poll("the retried run in Jaeger", functools.partial(jaeger_trace, run["trace_id"]))
    by_id = {span["spanID"]: span for span in trace["spans"]}
    [summarise] = [s for s in by_id.values() if s["operationName"] == "run_step summarise"]
    links = [r for r in summarise["references"] if r["refType"] == "FOLLOWS_FROM"]
    assert len(links) == 1
    cause = by_id[links[0]["spanID"]]
    assert cause["operationName"] == "run_step call_tool"
    assert tags(cause)[attrs.STEP_ATTEMPT] == 2
    assert _span_events(trace) == [tuple(item) for item in run["stream"]]


def _tempo_span_names(trace_id: str) -> set[str]:
    trace = request(f"{TEMPO}/api/traces/{trace_id}")
    batches = trace.get("batches") or trace.get("resourceSpans") or []
    return {
        span["name"]
        for batch in batches
        for scope in batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
        for span in scope["spans"]
    }


def _tempo_traces(expr: str, start: float, end: float) -> list[Any]:
    params = {"q": expr, "start": str(int(start)), "end": str(int(end)), "limit": "100"}
    traces: list[Any] = request(f"{TEMPO}/api/search", params)["traces"]
    return traces


def test_tempo_has_the_trace_and_every_traceql_query_finds_the_run(
    runs: Runs, stack: Stack
) -> None:
    """Tempo returns the trace by id; each TraceQL query of the dashboards finds that run."""
    stack.require("tempo")
    trace_id = runs.failed["trace_id"]
    names = poll("the trace in Tempo", functools.partial(_tempo_span_names, trace_id))
    assert "invoke_workflow ToolCallWorkflow" in names
    start, end = time.time() - 3600, time.time() + 600
    queries = [q for q in dashboard_queries() if q.language == "traceql"]
    assert queries
    for query in queries:
        expr = substitute(query.expr, _values(runs))

        def found(expr: str = expr) -> bool:
            ids = {t["traceID"].lstrip("0") for t in _tempo_traces(expr, start, end)}
            return trace_id.lstrip("0") in ids

        poll(query.where, found)


def _loki_lines(expr: str, start: float) -> list[tuple[str, str, dict[str, str]]]:
    """(timestamp, line, labels and structured metadata) of a LogQL query, oldest first."""
    params = {
        "query": expr,
        "start": str(int(start * 1e9)),
        "limit": "5000",
        "direction": "forward",
    }
    result = request(f"{LOKI}/loki/api/v1/query_range", params)["data"]["result"]
    lines = [(ts, line, stream["stream"]) for stream in result for ts, line in stream["values"]]
    return sorted(lines)


def test_loki_has_every_streamed_event_of_the_run_in_seq_order(runs: Runs, stack: Stack) -> None:
    """Every stream_event line of the failed run, found by its trace_id, in seq order."""
    stack.require("loki")
    run = runs.failed
    expr = f'{{service_name="{runs.service}"}} |= "stream_event" | trace_id="{run["trace_id"]}"'
    start = time.time() - 3600
    expected = [tuple(item) for item in run["stream"]]

    def complete() -> list[tuple[str, str, dict[str, str]]] | None:
        lines = _loki_lines(expr, start)
        return lines if len(lines) >= len(expected) else None

    lines = poll("the run's stream_event lines in Loki", complete)
    seen = [(meta["event_type"], int(meta["seq"])) for _, _, meta in lines]
    assert sorted(seen, key=lambda item: item[1]) == expected
    assert [seq for _, seq in seen] == sorted(seq for _, seq in seen), "Loki's order is seq order"


def _loki_result(expr: str, start: float) -> list[Any]:
    params = {"query": expr, "start": str(int(start * 1e9))}
    result: list[Any] = request(f"{LOKI}/loki/api/v1/query_range", params)["data"]["result"]
    return result


def test_every_logql_query_of_the_dashboards_returns_data(runs: Runs, stack: Stack) -> None:
    """Each LogQL query of the dashboards returns data for the test's service."""
    stack.require("loki")
    start = time.time() - 3600
    queries = [q for q in dashboard_queries() if q.language == "logql"]
    assert queries
    for query in queries:
        expr = substitute(query.expr, _values(runs))
        poll(query.where, functools.partial(_loki_result, expr, start))


def _prometheus(expr: str) -> list[Any]:
    result: list[Any] = request(f"{PROMETHEUS}/api/v1/query", {"query": expr})["data"]["result"]
    return result


def test_every_promql_query_of_the_dashboards_returns_series(runs: Runs) -> None:
    """Each PromQL query returns series; the raw series carry the contract's labels."""
    values = _values(runs)
    queries = [
        q
        for q in dashboard_queries()
        if q.language == "promql" and q.dashboard != CLUSTER_DASHBOARD
    ]  # the cluster view's: tests/test_cluster_dashboard.py
    assert len(queries) >= 10
    for query in queries:
        poll(query.where, functools.partial(_prometheus, substitute(query.expr, values)))
    for series, labels in EXPECTED_LABELS.items():
        result = poll(
            series, functools.partial(_prometheus, f'{series}{{service_name="{runs.service}"}}')
        )
        for item in result:
            assert labels <= set(item["metric"]), (series, item["metric"])
    statuses = _prometheus(
        f'stepstream_run_duration_seconds_count{{service_name="{runs.service}"}}'
    )
    assert {"ok", "error", "timeout"} <= {r["metric"]["stepstream_run_status"] for r in statuses}


def test_exemplars_carry_trace_ids_that_the_trace_backends_resolve(
    runs: Runs, stack: Stack
) -> None:
    """The run duration histogram's exemplars name traces that Jaeger (and Tempo) return."""
    bucket = f'stepstream_run_duration_seconds_bucket{{service_name="{runs.service}"}}'
    now = time.time()
    exemplars = poll(
        "exemplars in Prometheus",
        lambda: request(
            f"{PROMETHEUS}/api/v1/query_exemplars",
            {"query": bucket, "start": str(now - 3600), "end": str(now + 60)},
        )["data"],
    )
    trace_ids = {e["labels"]["trace_id"] for s in exemplars for e in s["exemplars"]}
    assert trace_ids
    for trace_id in sorted(trace_ids)[:5]:
        trace = poll(
            f"exemplar trace {trace_id} in Jaeger", functools.partial(jaeger_trace, trace_id)
        )
        assert any(s["operationName"].startswith("invoke_workflow ") for s in trace["spans"])
        if "tempo" not in stack.absent:
            assert poll(
                f"exemplar trace {trace_id} in Tempo",
                functools.partial(_tempo_span_names, trace_id),
            )


def test_grafana_has_healthy_datasources_and_both_dashboards(runs: Runs, stack: Stack) -> None:
    """Grafana's provisioned datasources answer their health checks; both dashboards load."""
    del runs
    stack.require("grafana")
    for uid in ("stepstream-overview", "stepstream-run-explorer"):
        dashboard = request(f"{GRAFANA}/api/dashboards/uid/{uid}", auth="admin:admin")
        assert dashboard["dashboard"]["uid"] == uid
    sources = request(f"{GRAFANA}/api/datasources", auth="admin:admin")
    assert {s["uid"] for s in sources} >= {"prometheus", "loki", "tempo", "jaeger"}
    for uid in ("prometheus", "loki", "tempo", "jaeger"):
        health = request(f"{GRAFANA}/api/datasources/uid/{uid}/health", auth="admin:admin")
        assert health["status"] == "OK", (uid, health)


def test_the_example_service_reports_by_itself(stack: Stack) -> None:
    """The compose `example` service's runs reach Prometheus without anyone starting them."""
    stack.require("example")
    selector = 'stepstream_run_duration_seconds_count{service_name="stepstream-example"}'
    result = poll("the example service's metrics", functools.partial(_prometheus, selector))
    assert {r["metric"]["stepstream_workflow"] for r in result} >= {"MyWorkflow", "FlakyWorkflow"}


def test_the_embedded_default_reaches_the_backends_by_push(stack: Stack, tmp_path: Path) -> None:
    """Runs recorded in .stepstream/ (no endpoint), then `stepstream traces push`ed."""
    service = f"stepstream-pushed-{uuid.uuid4().hex[:8]}"
    lines = run_app(
        "failed", "--rounds", "0", env=app_env(service, None), cwd=tmp_path, timeout=120
    )
    run = next(line for line in lines if line.get("kind") == "failed")
    recorded = tmp_path / ".stepstream"
    assert (recorded / "traces.jsonl").stat().st_size > 0
    env = app_env(service, None)
    done = stepstream_cli(
        "traces",
        "push",
        "--endpoint",
        COLLECTOR,
        "--telemetry-dir",
        str(recorded),
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert f"log lines to {COLLECTOR}" in done.stderr
    _assert_whole_failed_run_in_jaeger(run, service)
    if "tempo" not in stack.absent:
        names = poll(
            "the pushed trace in Tempo", functools.partial(_tempo_span_names, run["trace_id"])
        )
        assert "invoke_workflow ToolCallWorkflow" in names
    if "loki" not in stack.absent:
        expr = f'{{service_name="{service}"}} |= "stream_event" | trace_id="{run["trace_id"]}"'
        lines_found = poll(
            "the pushed lines in Loki", lambda: _loki_lines(expr, time.time() - 3600)
        )
        assert len(lines_found) == len(run["stream"])


def test_the_local_stack_answers_on_the_compose_ports(stack: Stack) -> None:
    """The ports deploy/README.md lists answer: OTLP, Jaeger, Prometheus, health."""
    assert request(f"{JAEGER}/api/services") is not None
    assert request(f"{PROMETHEUS}/api/v1/status/buildinfo")["data"]["version"].startswith("3.")
    for url in ("http://127.0.0.1:13133/",):
        assert request(url) is not None
    del stack
