"""The dashboards' queries, for the tests that lint, parse and run them.

Reads dashboards/*.json and the Grafana datasource provisioning, walks every panel and
variable, and returns each PromQL, LogQL and TraceQL expression with where it came from.
``substitute()`` replaces Grafana's template variables ($workflow, ${trace_id},
$__rate_interval, $__auto, ...) with concrete values, as Grafana does before a query
reaches the datasource.
"""

import json
import re
import shutil
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from _helpers import ROOT
from _helpers import command_problem

DASHBOARDS = ROOT / "dashboards"
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
DATASOURCES_FILE = COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DEPS_SCRIPT = ROOT / ".ci" / "deps-deploy.sh"

#: Dashboard file -> expected title.
EXPECTED = {
    "overview.json": "stepstream / overview",
    "run-explorer.json": "stepstream / run explorer",
    "cluster.json": "stepstream / cluster",
}
#: The dashboard of a stepstream cluster: its metrics come from durable replicas only, so
#: tests/test_cluster_dashboard.py runs its queries (against replicas it starts), not the
#: tests that feed the example workflows' metrics.
CLUSTER_DASHBOARD = "cluster.json"

#: Datasource template variables: name -> datasource type.
DATASOURCE_VARIABLES = {
    "prometheus_datasource": "prometheus",
    "loki_datasource": "loki",
    "tempo_datasource": "tempo",
}

#: A trace id and a run id as they look in stepstream's telemetry.
SAMPLE_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SAMPLE_RUN_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"

#: Values for Grafana's built-in variables, as a short dashboard range gives them.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__auto": "1m",
    "__range": "1h",
}

_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class Query:
    """One expression of a dashboard (or a datasource link), and where it is."""

    language: str  # promql | logql | traceql | traceid
    expr: str
    where: str
    dashboard: str = ""
    panel_type: str = ""


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Return every dashboard JSON in dashboards/, by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def load_yaml(path: Path) -> Any:
    """Parse one YAML file."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every panel, including those inside (collapsed) rows; rows themselves too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Return the dashboard's template variables."""
    return list(dashboard.get("templating", {}).get("list", []))


def variable_query(variable: Mapping[str, Any]) -> str:
    """Return a query variable's query text (Grafana stores a string or an object)."""
    query = variable.get("query", "")
    if isinstance(query, dict):
        return str(query.get("query", ""))
    return str(query)


def datasource_type(ref: Any) -> str:
    """Return the datasource type of a panel's or target's datasource reference."""
    if isinstance(ref, dict):
        return str(ref.get("type", ""))
    return ""


def _target_language(ds_type: str, target: Mapping[str, Any]) -> str | None:
    if ds_type == "prometheus":
        return "promql"
    if ds_type == "loki":
        return "logql"
    if ds_type == "tempo" and target.get("queryType", "traceql") == "traceql":
        text = str(target.get("query", "")).strip()
        return "traceid" if re.fullmatch(r"\$\{?trace_id\}?", text) else "traceql"
    return None


def dashboard_queries() -> list[Query]:
    """Return every target expression and query-variable query of every dashboard."""
    found: list[Query] = []
    for name, dashboard in load_dashboards().items():
        for panel in iter_panels(dashboard):
            for target in panel.get("targets", []):
                ds_type = datasource_type(target.get("datasource") or panel.get("datasource"))
                language = _target_language(ds_type, target)
                if language is None:
                    continue
                expr = str(target.get("query" if ds_type == "tempo" else "expr", ""))
                where = f"{name}: panel {panel.get('title')!r} target {target.get('refId')}"
                found.append(Query(language, expr, where, name, str(panel.get("type"))))
        for variable in variables(dashboard):
            if variable.get("type") == "query":
                ds_type = datasource_type(variable.get("datasource"))
                language = {"prometheus": "promql"}.get(ds_type, ds_type)
                where = f"{name}: variable {variable.get('name')!r}"
                found.append(Query(f"{language}-variable", variable_query(variable), where, name))
    return found


def datasource_link_queries() -> list[Query]:
    """Return the queries in the datasources' links (traces to logs, traces to metrics)."""
    found: list[Query] = []
    for ds in load_yaml(DATASOURCES_FILE)["datasources"]:
        data = ds.get("jsonData", {})
        logs = data.get("tracesToLogsV2", {})
        if logs.get("customQuery"):
            where = f"datasource {ds['name']}: tracesToLogsV2"
            found.append(Query("logql", _unescape(logs["query"]), where))
        for query in data.get("tracesToMetrics", {}).get("queries", []):
            where = f"datasource {ds['name']}: tracesToMetrics {query['name']!r}"
            found.append(Query("promql", _unescape(query["query"]), where))
    return found


def _unescape(text: str) -> str:
    """Undo Grafana provisioning's "$$" escape of a literal "$"."""
    return text.replace("$$", "$")


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace every $var, ${var}, ${var:format} and [[var]] with ``values`` or a built-in.

    Unknown variables raise KeyError, so a typo in a dashboard fails the test.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group is not None)
        if name in values:
            return values[name]
        return BUILTINS[name]

    return _VARIABLE.sub(replace, expr)


#: What the datasource links' own variables stand for: ${__tags} becomes the span's tags as
#: label matchers, ${__trace.traceId} the trace id.
LINK_TAGS = 'service_name="stepstream-test"'


def substitute_link(expr: str) -> str:
    """Substitute the datasource-link variables ${__tags}, $__tags and ${__trace.traceId}."""
    expr = expr.replace("${__trace.traceId}", SAMPLE_TRACE_ID)
    return expr.replace("${__tags}", LINK_TAGS).replace("$__tags", LINK_TAGS)


# -- installing the test tools (.ci/deps-deploy.sh) ------------------------------------


def ensure_tool(target: str, present: bool, timeout: float = 600) -> str | None:
    """Run ``.ci/deps-deploy.sh <target>`` unless present; return why it failed, or None."""
    if present:
        return None
    bash = shutil.which("bash")
    if bash is None:
        return "bash is missing, so .ci/deps-deploy.sh cannot run"
    what = f".ci/deps-deploy.sh {target}"
    return command_problem(bash, DEPS_SCRIPT, target, what=what, timeout=timeout, cwd=ROOT)
