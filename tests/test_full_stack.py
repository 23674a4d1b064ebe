"""The whole stack, for real: compose up, run the examples, find their telemetry in every backend.

Runs only where a Docker daemon answers (`docker info` succeeds) and Compose v2 is there;
elsewhere every test is skipped with the reason. It starts deploy/compose under its own
project name (the published ports 3000, 3100, 3200, 4317, 4318, 9090, 13133 and 16686 of
127.0.0.1 must be free), runs deploy/example_loop.py once against the collector under a
service name of its own, then asks Jaeger's and Tempo's APIs for the failed run's trace,
Loki for its log lines, Prometheus for its metrics and exemplars, runs every dashboard
query against the backend it is meant for, and checks that Grafana serves both
dashboards. The stack is torn down (with its volumes) whatever happens.
"""

import base64
import functools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from typing import TypeVar

import pytest

from _dashboard_queries import COMPOSE_DIR
from _dashboard_queries import DEPLOY
from _dashboard_queries import dashboard_queries
from _dashboard_queries import substitute
from _helpers import command_problem
from _helpers import run_command
from stepstream.telemetry import attributes as attrs

COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yaml"
JAEGER = "http://127.0.0.1:16686"
TEMPO = "http://127.0.0.1:3200"
LOKI = "http://127.0.0.1:3100"
PROMETHEUS = "http://127.0.0.1:9090"
GRAFANA = "http://127.0.0.1:3000"
COLLECTOR = "http://127.0.0.1:4318"
#: Bound on each wait for data to arrive in a backend.
DEADLINE = 180.0
T = TypeVar("T")


def _docker_problem() -> str | None:
    """Return why the stack cannot run here, or None when a Docker daemon answers."""
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client on PATH"
    for args in (["info"], ["compose", "version"]):
        problem = command_problem(docker, *args, what=f"`docker {' '.join(args)}`", timeout=30)
        if problem is not None:
            return problem
    return None


_PROBLEM = _docker_problem()
pytestmark = pytest.mark.skipif(
    _PROBLEM is not None,
    reason=f"needs a running Docker daemon with Compose v2 ({_PROBLEM})",
)


def _compose(project: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker") or "docker"
    compose = (docker, "compose", "-f", COMPOSE_FILE, "-p", project)
    return run_command(*compose, *args, timeout=timeout)


@pytest.fixture(scope="module")
def stack() -> Iterator[str]:
    """deploy/compose up with --wait (healthy), torn down with its volumes afterwards."""
    project = f"stepstream-fullstack-{os.getpid()}"
    try:
        up = _compose(
            project, "up", "-d", "--build", "--wait", "--wait-timeout", "600", timeout=900
        )
        if up.returncode != 0:
            logs = _compose(project, "logs", "--no-color", "--tail", "40", timeout=120)
            pytest.fail(f"compose up failed:\n{up.stderr[-4000:]}\n{logs.stdout[-8000:]}")
        yield project
    finally:
        _compose(project, "down", "--volumes", "--remove-orphans", timeout=300)


def _request(url: str, params: dict[str, str] | None = None, *, auth: str | None = None) -> Any:
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url)  # noqa: S310 - loopback only
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310 - loopback
        return json.loads(response.read() or b"null")


def _poll(what: str, fetch: Callable[[], T | None], deadline: float = DEADLINE) -> T:
    """Call ``fetch`` until it returns something truthy, for at most ``deadline`` seconds."""
    end = time.monotonic() + deadline
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            value = fetch()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as exc:
            last = exc
        else:
            if value:
                return value
        time.sleep(2)
    pytest.fail(f"{what}: nothing within {deadline:.0f} s (last error: {last})")


@dataclass(frozen=True)
class FailedRun:
    """The failed ToolCallWorkflow run of the test's own example round."""

    service: str
    trace_id: str
    run_id: str


@pytest.fixture(scope="module")
def failed_run(stack: str, tmp_path_factory: pytest.TempPathFactory) -> FailedRun:
    """Run one round of the examples against the collector; find its failed run in Jaeger."""
    del stack
    service = f"stepstream-fullstack-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("example")
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": COLLECTOR,
        "OTEL_SERVICE_NAME": service,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "STEPSTREAM_EXAMPLE_HEARTBEAT": str(work / "heartbeat"),
    }
    loop = (DEPLOY / "example_loop.py", "--rounds", "3", "--interval", "2")
    done = run_command(sys.executable, *loop, cwd=work, env=env, timeout=180)
    assert done.returncode == 0, done.stderr

    def find() -> FailedRun | None:
        traces = _request(f"{JAEGER}/api/traces", {"service": service, "limit": "100"})["data"]
        for trace in traces:
            for span in trace["spans"]:
                tags = {t["key"]: t["value"] for t in span["tags"]}
                if (
                    span["operationName"] == "invoke_workflow ToolCallWorkflow"
                    and tags.get(attrs.RUN_STATUS) == attrs.STATUS_ERROR
                ):
                    return FailedRun(service, trace["traceID"], str(tags[attrs.RUN_ID]))
        return None

    return _poll("a failed ToolCallWorkflow run in Jaeger", find)


def _values(run: FailedRun) -> dict[str, str]:
    return {
        "service": run.service,
        "workflow": ".*",
        "step": ".*",
        "run_id": run.run_id,
        "trace_id": run.trace_id,
        "__rate_interval": "1m",
        "__auto": "1m",
    }


def test_jaeger_has_the_whole_trace(failed_run: FailedRun) -> None:
    """Jaeger returns the failed run's trace with its run span and its step attempts."""
    trace = _request(f"{JAEGER}/api/traces/{failed_run.trace_id}")["data"][0]
    names = [span["operationName"] for span in trace["spans"]]
    assert "invoke_workflow ToolCallWorkflow" in names
    assert names.count("run_step call_tool") == 3


def test_tempo_has_the_trace_and_finds_it_by_traceql(failed_run: FailedRun) -> None:
    """Tempo returns the trace by id, and a TraceQL search on the run status finds it."""

    def by_id() -> set[str] | None:
        trace = _request(f"{TEMPO}/api/traces/{failed_run.trace_id}")
        batches = trace.get("batches") or trace.get("resourceSpans") or []
        return {
            span["name"]
            for batch in batches
            for scope in batch.get("scopeSpans") or batch.get("instrumentationLibrarySpans") or []
            for span in scope["spans"]
        }

    names = _poll("the trace in Tempo", by_id)
    assert "invoke_workflow ToolCallWorkflow" in names
    query = (
        f'{{ resource.service.name = "{failed_run.service}" && '
        f'span.stepstream.run.status = "error" }}'
    )
    found = _poll(
        "the TraceQL search",
        lambda: _request(f"{TEMPO}/api/search", {"q": query, "limit": "50"})["traces"],
    )
    assert failed_run.trace_id.lstrip("0") in {t["traceID"].lstrip("0") for t in found}


def test_loki_has_the_runs_log_lines_by_trace_id(failed_run: FailedRun) -> None:
    """Loki returns the run's lines, filtered by the trace_id structured metadata."""
    query = f'{{service_name="{failed_run.service}"}} | trace_id="{failed_run.trace_id}"'
    start = str(int((time.time() - 3600) * 1e9))

    def lines() -> list[str] | None:
        result = _request(f"{LOKI}/loki/api/v1/query_range", {"query": query, "start": start})
        return [line for stream in result["data"]["result"] for _, line in stream["values"]]

    found = set(_poll("the run's log lines in Loki", lines))
    assert {attrs.LOG_RUN_STARTED, attrs.LOG_STEP_FAILED, attrs.LOG_RUN_FINISHED} <= found


def test_prometheus_has_the_metrics_and_exemplars(failed_run: FailedRun) -> None:
    """Prometheus has the run metrics of the service, with exemplars pointing at traces."""
    selector = f'stepstream_run_duration_seconds_count{{service_name="{failed_run.service}"}}'
    result = _poll("the run metrics in Prometheus", functools.partial(_prometheus_result, selector))
    assert {"ok", "error", "timeout"} <= {r["metric"]["stepstream_run_status"] for r in result}
    bucket = f'stepstream_run_duration_seconds_bucket{{service_name="{failed_run.service}"}}'
    now = time.time()
    exemplars = _poll(
        "exemplars in Prometheus",
        lambda: _request(
            f"{PROMETHEUS}/api/v1/query_exemplars",
            {"query": bucket, "start": str(now - 3600), "end": str(now + 60)},
        )["data"],
    )
    labels = {k for series in exemplars for e in series["exemplars"] for k in e["labels"]}
    assert "trace_id" in labels


def _prometheus_result(expr: str) -> list[Any]:
    result: list[Any] = _request(f"{PROMETHEUS}/api/v1/query", {"query": expr})["data"]["result"]
    return result


def _loki_result(expr: str, start: float) -> list[Any]:
    params = {"query": expr, "start": str(int(start * 1e9))}
    result: list[Any] = _request(f"{LOKI}/loki/api/v1/query_range", params)["data"]["result"]
    return result


def _tempo_traces(expr: str, start: float, end: float) -> list[Any]:
    params = {"q": expr, "start": str(int(start)), "end": str(int(end))}
    traces: list[Any] = _request(f"{TEMPO}/api/search", params)["traces"]
    return traces


def test_every_dashboard_query_returns_data_from_its_backend(failed_run: FailedRun) -> None:
    """Each PromQL, LogQL and TraceQL query of the dashboards returns data for this service."""
    values = _values(failed_run)
    start, end = time.time() - 3600, time.time() + 600
    checked = 0
    for query in dashboard_queries():
        expr = substitute(query.expr, values)
        if query.language == "promql":
            _poll(query.where, functools.partial(_prometheus_result, expr))
        elif query.language == "logql":
            _poll(query.where, functools.partial(_loki_result, expr, start))
        elif query.language == "traceql":
            _poll(query.where, functools.partial(_tempo_traces, expr, start, end))
        else:
            continue
        checked += 1
    assert checked >= 20


def test_grafana_serves_both_dashboards_and_the_datasources(failed_run: FailedRun) -> None:
    """Grafana has provisioned both dashboards and the four datasources."""
    del failed_run
    for uid in ("stepstream-overview", "stepstream-run-explorer"):
        dashboard = _request(f"{GRAFANA}/api/dashboards/uid/{uid}", auth="admin:admin")
        assert dashboard["dashboard"]["uid"] == uid
    sources = _request(f"{GRAFANA}/api/datasources", auth="admin:admin")
    assert {s["uid"] for s in sources} >= {"prometheus", "loki", "tempo", "jaeger"}
    health = _request(f"{GRAFANA}/api/health")
    assert health["database"] == "ok"


def test_the_example_service_reports_by_itself(stack: str) -> None:
    """The compose `example` service's runs reach Prometheus without anyone starting them."""
    del stack
    selector = 'stepstream_run_duration_seconds_count{service_name="stepstream-example"}'
    result = _poll("the example service's metrics", functools.partial(_prometheus_result, selector))
    assert {r["metric"]["stepstream_workflow"] for r in result} >= {"MyWorkflow", "FlakyWorkflow"}
