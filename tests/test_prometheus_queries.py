"""Every PromQL expression of the dashboards parses and returns data from a real Prometheus.

A real stepstream process (tests/_metrics_app.py) runs the example workflows, including
failing, retried and timed-out runs, and exposes its metrics through
opentelemetry-exporter-prometheus on a free loopback port. A real Prometheus, the version
deploy/compose pins (built from its Go module by .ci/build-stack.sh), scrapes it every
second, with a generated config and a temporary data directory, on another free
loopback port. Its HTTP API is Prometheus's own parser: /api/v1/query answers a
malformed expression with bad_data.

The scrape config adds the label service_name="stepstream-test": the stack's Prometheus
puts service_name on every series from the OTLP resource (otlp.promote_resource_attributes
in deploy/compose/prometheus.yaml), and the scrape path has to match it.
"""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _dashboard_queries import CLUSTER_DASHBOARD
from _dashboard_queries import Query
from _dashboard_queries import dashboard_queries
from _dashboard_queries import datasource_link_queries
from _dashboard_queries import substitute
from _dashboard_queries import substitute_link
from _helpers import ROOT

APP = Path(__file__).resolve().parent / "_metrics_app.py"
BUILD_SCRIPT = ROOT / ".ci" / "build-stack.sh"
SERVICE_NAME = "stepstream-test"
#: Values for the dashboards' variables: every service, workflow and step.
VALUES = {"service": ".+", "workflow": ".*", "step": ".*"}
#: How long the queries may take to all return data (a round of examples lasts ~4 s).
DATA_DEADLINE = 45.0

#: OpenTelemetry instrument -> the Prometheus series it becomes (empirically: this test
#: asserts it). Unit "s" adds _seconds; counters get _total; the up-down counter is a
#: gauge without a suffix; the "{event}"-style units add nothing.
EXPECTED_SERIES = {
    "stepstream.run.duration": {
        "stepstream_run_duration_seconds_bucket",
        "stepstream_run_duration_seconds_count",
        "stepstream_run_duration_seconds_sum",
    },
    "stepstream.step.duration": {
        "stepstream_step_duration_seconds_bucket",
        "stepstream_step_duration_seconds_count",
        "stepstream_step_duration_seconds_sum",
    },
    "stepstream.events.streamed": {"stepstream_events_streamed_total"},
    "stepstream.runs.active": {"stepstream_runs_active"},
    "stepstream.step.retries": {"stepstream_step_retries_total"},
}
EXPECTED_LABELS = {
    "stepstream_run_duration_seconds_count": {"stepstream_workflow", "stepstream_run_status"},
    "stepstream_step_duration_seconds_count": {
        "stepstream_workflow",
        "stepstream_step",
        "stepstream_step_status",
    },
    "stepstream_events_streamed_total": {"stepstream_workflow", "stepstream_event_type"},
    "stepstream_runs_active": {"stepstream_workflow"},
    "stepstream_step_retries_total": {"stepstream_workflow", "stepstream_step"},
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            if _get(url, timeout=1.0)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {seconds:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    """The Prometheus that deploy/compose pins, built by .ci/build-stack.sh when missing."""
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "prometheus"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert done.returncode == 0, f"{BUILD_SCRIPT} prometheus failed:\n{done.stderr[-4000:]}"
    return done.stdout.strip()


@pytest.fixture(scope="module")
def app_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A stepstream process running the example workflows, its metrics on 127.0.0.1."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("app") / "app.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(APP), str(port), "--interval", "1", "--seconds", "240"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/metrics", proc, 30)
        yield port
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def prometheus(
    prometheus_binary: str, app_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Prometheus on 127.0.0.1 scraping the app every second; yields its base URL."""
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML: no quoting surprises
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": SERVICE_NAME,
                        "scrape_interval": "1s",
                        "scrape_timeout": "1s",
                        "static_configs": [
                            {
                                "targets": [f"127.0.0.1:{app_port}"],
                                "labels": {"service_name": SERVICE_NAME},
                            }
                        ],
                    }
                ],
            }
        )
    )
    port = _free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/-/ready", proc, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)
        log.close()


def _api(base: str, path: str, **params: str) -> dict[str, Any]:
    query = urllib.parse.urlencode(params)
    status, body = _get(f"{base}{path}?{query}")
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer


def _series_selector(query: Query) -> tuple[str, str]:
    """Split label_values(selector, label) into its selector and label."""
    match = re.fullmatch(r"label_values\((.+), (\w+)\)", query.expr)
    assert match, query.where
    return match.group(1), match.group(2)


def _queries() -> list[Query]:
    """The PromQL of the dashboards fed by the example workflows (not the cluster view)."""
    promql = [
        q
        for q in dashboard_queries()
        if q.language == "promql" and q.dashboard != CLUSTER_DASHBOARD
    ]
    promql += [q for q in datasource_link_queries() if q.language == "promql"]
    return promql


def _concrete(query: Query) -> str:
    return substitute(substitute_link(query.expr), VALUES)


@dataclass
class Outcome:
    """What one query returned the last time it was asked."""

    status: str
    values: list[float]


def _evaluate(base: str, expr: str) -> Outcome:
    answer = _api(base, "/api/v1/query", query=expr)
    if answer.get("status") != "success":
        return Outcome(f"{answer.get('errorType')}: {answer.get('error')}", [])
    result = answer["data"]["result"]
    values = [float(sample["value"][1]) for sample in result]
    return Outcome("success", values)


def _has_data(outcome: Outcome) -> bool:
    return any(not math.isnan(v) for v in outcome.values)


@pytest.fixture(scope="module")
def outcomes(prometheus: str) -> dict[str, Outcome]:
    """Each dashboard query's result, once all return data or the deadline passed."""
    exprs = {q.where: _concrete(q) for q in _queries()}
    results: dict[str, Outcome] = {}
    deadline = time.monotonic() + DATA_DEADLINE
    while True:
        results = {where: _evaluate(prometheus, expr) for where, expr in exprs.items()}
        if all(_has_data(o) for o in results.values()) or time.monotonic() > deadline:
            return results
        time.sleep(1.0)


def test_the_dashboards_have_promql_queries() -> None:
    """The dashboards and the datasource links hold at least a dozen PromQL expressions."""
    assert len(_queries()) >= 12


def test_every_expression_parses(prometheus: str) -> None:
    """Prometheus accepts every dashboard expression (a parse error answers bad_data)."""
    problems = {}
    for query in _queries():
        answer = _api(prometheus, "/api/v1/query", query=_concrete(query))
        if answer.get("status") != "success":
            problems[query.where] = f"{answer.get('errorType')}: {answer.get('error')}"
    assert not problems


def test_a_malformed_expression_is_reported_as_a_parse_error(prometheus: str) -> None:
    """The parse check has teeth: an unbalanced expression is rejected with bad_data."""
    answer = _api(prometheus, "/api/v1/query", query="sum(rate(stepstream_runs_active[1m])")
    assert answer["http_status"] == 400
    assert answer["errorType"] == "bad_data"
    assert "parse error" in answer["error"]


def test_every_dashboard_query_returns_data(outcomes: dict[str, Outcome]) -> None:
    """Each expression returns at least one sample that is a number (not NaN)."""
    empty = {where: o for where, o in outcomes.items() if not _has_data(o)}
    assert not empty, f"queries without data: {empty}"


@pytest.mark.usefixtures("outcomes")
def test_every_variable_query_returns_values(prometheus: str) -> None:
    """label_values() of each dashboard variable finds series and label values."""
    checked = 0
    for query in dashboard_queries():
        if query.language != "promql-variable" or query.dashboard == CLUSTER_DASHBOARD:
            continue
        selector, label = _series_selector(query)
        answer = _api(prometheus, "/api/v1/series", **{"match[]": substitute(selector, VALUES)})
        assert answer["status"] == "success", query.where
        values = {series.get(label) for series in answer["data"]} - {None}
        assert values, f"{query.where}: no values of {label}"
        checked += 1
    assert checked >= 3


@pytest.mark.usefixtures("outcomes")
def test_every_selector_of_every_query_matches_series(prometheus: str) -> None:
    """Each metric{labels} selector inside the queries matches series on its own."""
    selector = re.compile(r"\b(stepstream_\w+)\{[^{}]*\}")
    checked = 0
    for query in _queries():
        for match in selector.finditer(_concrete(query)):
            answer = _api(prometheus, "/api/v1/series", **{"match[]": match.group(0)})
            assert answer["data"], f"{query.where}: {match.group(0)} matches no series"
            checked += 1
    assert checked >= 12


@pytest.mark.usefixtures("outcomes")
def test_the_metric_names_the_dashboards_use_are_emitted_by_the_runtime(prometheus: str) -> None:
    """Every stepstream_* name in a query is a series the runtime exposes."""
    emitted = set(_api(prometheus, "/api/v1/label/__name__/values")["data"])
    names = {m for q in _queries() for m in re.findall(r"\b(stepstream_\w+)\s*[{\[]", q.expr)}
    assert names, "no metric names found"
    assert names <= emitted, f"not emitted: {sorted(names - emitted)}"


@pytest.mark.usefixtures("outcomes")
def test_the_runtime_emits_the_documented_series_and_labels(prometheus: str) -> None:
    """The five instruments become exactly the documented series, with their labels."""
    emitted = {
        n
        for n in _api(prometheus, "/api/v1/label/__name__/values")["data"]
        if n.startswith("stepstream_")
    }
    expected = set().union(*EXPECTED_SERIES.values())
    # OpenMetrics scrapes add a _created series per counter and histogram; nothing else.
    assert expected <= emitted
    assert {n for n in emitted - expected if not n.endswith("_created")} == set()
    for name, wanted in EXPECTED_LABELS.items():
        series = _api(prometheus, "/api/v1/series", **{"match[]": name})["data"]
        assert series, name
        for labelset in series:
            assert wanted <= set(labelset), f"{name}: {sorted(labelset)}"
            assert labelset["service_name"] == SERVICE_NAME


@pytest.mark.usefixtures("outcomes")
def test_failures_retries_and_timeouts_reach_prometheus(prometheus: str) -> None:
    """The example runs produce error and timeout runs, failed step attempts and retries."""
    statuses = _api(
        prometheus,
        "/api/v1/query",
        query="sum by (stepstream_run_status) (stepstream_run_duration_seconds_count)",
    )["data"]["result"]
    assert {"ok", "error", "timeout"} <= {s["metric"]["stepstream_run_status"] for s in statuses}
    retries = _api(
        prometheus,
        "/api/v1/query",
        query="sum by (stepstream_step) (stepstream_step_retries_total)",
    )["data"]["result"]
    assert {"fetch", "call_tool"} <= {s["metric"]["stepstream_step"] for s in retries}
