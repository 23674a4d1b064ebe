"""Dashboard lint, modelled on the rules of Grafana's dashboard-linter.

The rules checked (the linter's rule names in brackets): unique uids and titles; the
three datasource template variables and no hard-coded datasource uid
[template-datasource-rule, panel-datasource-rule]; a unit and a description on every
panel [panel-units-rule, panel-title-description-rule]; counters only inside rate() or
increase() over $__rate_interval [target-counter-agg-rule, target-rate-interval-rule];
$__auto in every LogQL range [target-logql-auto-rule]; query variables refreshed on
time-range change [template-on-time-change-reload-rule]; no unused variables
[template-unused]. Parsing and running the queries is in test_prometheus_queries.py and
test_logql_traceql.py.
"""

import re
from collections.abc import Iterator
from typing import Any

import pytest

from _dashboard_queries import CLUSTER_DASHBOARD
from _dashboard_queries import DATASOURCE_VARIABLES
from _dashboard_queries import EXPECTED
from _dashboard_queries import dashboard_queries
from _dashboard_queries import iter_panels
from _dashboard_queries import load_dashboards
from _dashboard_queries import variable_query
from _dashboard_queries import variables

#: Grafana's unit ids, as enumerated by dashboard-linter's panel-units-rule (subset we
#: allow: the ones that make sense for run, step and event metrics, logs and traces).
VALID_UNITS = {
    "none", "string", "short", "percent", "percentunit", "locale",
    "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations",
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
}  # fmt: skip

COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
GAUGES = {"stepstream_runs_active", "stepstream_runs_parked", "stepstream_queue_depth"}
RATE_FUNCTIONS = ("rate", "irate", "increase")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__auto", "__range", "__url_time_range"}


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON in dashboards/, by file name."""
    return load_dashboards()


def _content_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    return (p for p in iter_panels(dashboard) if p.get("type") != "row")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Yield (path, key, value) for every key of every dict in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_the_dashboards_exist_with_unique_uids_and_titles(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """dashboards/ holds exactly overview, run-explorer and cluster, uids and titles unique."""
    assert set(dashboards) == set(EXPECTED)
    for name, title in EXPECTED.items():
        assert dashboards[name]["title"] == title
    uids = [d["uid"] for d in dashboards.values()]
    titles = [d["title"] for d in dashboards.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for uid in uids:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), uid


def test_each_dashboard_is_a_current_schema_file_dashboard(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Every dashboard has a current schemaVersion, no numeric id and is not editable in place."""
    for name, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] >= 39, name
        assert dashboard.get("id") is None, f"{name}: provisioned dashboards carry no id"
        assert dashboard["editable"] is False, f"{name}: it is provisioned from this repository"
        assert dashboard.get("description"), name


def test_datasource_variables_are_defined_by_name_and_type(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """The overview and run explorer have the variables prometheus_datasource, loki_datasource,
    tempo_datasource; the cluster view, whose panels are all PromQL, prometheus_datasource."""
    for name, dashboard in dashboards.items():
        found = {v["name"]: v for v in variables(dashboard) if v.get("type") == "datasource"}
        wanted = {"prometheus_datasource"} if name == CLUSTER_DASHBOARD else DATASOURCE_VARIABLES
        assert set(found) == set(wanted), name
        for var_name, variable in found.items():
            assert variable["query"] == DATASOURCE_VARIABLES[var_name], f"{name}: {var_name}"
            assert not variable.get("current", {}).get("value"), (
                f"{name}: {var_name} must not pin a datasource; Grafana picks the default"
            )


def test_no_datasource_uid_is_hard_coded(dashboards: dict[str, dict[str, Any]]) -> None:
    """Every datasource reference in the JSON is a ${..._datasource} variable of its type."""
    for name, dashboard in dashboards.items():
        for path, key, value in _walk(dashboard):
            if key != "datasource" or path.startswith(".annotations"):
                continue
            assert isinstance(value, dict), f"{name}{path}: datasource {value!r} by name"
            uid, ds_type = value.get("uid"), value.get("type")
            expected = f"${{{ds_type}_datasource}}"
            assert uid == expected, f"{name}{path}: datasource uid {uid!r}, want {expected!r}"
        builtin = dashboard["annotations"]["list"]
        assert all(a["datasource"]["uid"] == "-- Grafana --" for a in builtin), name


def test_every_panel_and_target_uses_a_templated_datasource(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Each panel names its datasource variable, and its targets use the same one."""
    for name, dashboard in dashboards.items():
        used: set[str] = set()
        for panel in _content_panels(dashboard):
            where = f"{name}: {panel.get('title')!r}"
            ref = panel.get("datasource")
            assert isinstance(ref, dict), f"{where} has no datasource"
            assert ref["uid"] in {f"${{{v}}}" for v in DATASOURCE_VARIABLES}, where
            used.add(ref["uid"])
            assert panel.get("targets"), f"{where} has no targets"
            for target in panel["targets"]:
                assert target.get("datasource", ref) == ref, f"{where} {target['refId']}"
        declared = {v["name"] for v in variables(dashboard) if v.get("type") == "datasource"}
        assert used == {f"${{{v}}}" for v in declared}, (
            f"{name}: every datasource variable is used by a panel"
        )


def test_every_panel_has_a_title_a_description_and_a_unit(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Each panel has a unique title, a sentence of description and a valid Grafana unit."""
    for name, dashboard in dashboards.items():
        titles: list[str] = []
        ids: list[int] = []
        for panel in _content_panels(dashboard):
            title = panel.get("title", "")
            where = f"{name}: {title!r}"
            assert title.strip(), f"{name}: a panel has no title"
            titles.append(title)
            ids.append(panel["id"])
            description = panel.get("description", "")
            assert len(description) >= 30, f"{where}: description {description!r}"
            assert description.rstrip().endswith("."), f"{where}: description is a sentence"
            unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
            assert unit in VALID_UNITS, f"{where}: unit {unit!r}"
            for override in panel["fieldConfig"].get("overrides", []):
                for prop in override.get("properties", []):
                    if prop["id"] == "unit":
                        assert prop["value"] in VALID_UNITS, f"{where}: override unit"
        assert len(set(titles)) == len(titles), f"{name}: duplicate panel titles"
        assert len(set(ids)) == len(ids), f"{name}: duplicate panel ids"


def test_panels_fit_the_grid_without_overlapping(dashboards: dict[str, dict[str, Any]]) -> None:
    """Every panel lies within Grafana's 24-column grid and no two panels overlap."""
    for name, dashboard in dashboards.items():
        cells: dict[tuple[int, int], str] = {}
        for panel in iter_panels(dashboard):
            grid = panel["gridPos"]
            assert grid["x"] >= 0, name
            assert grid["w"] > 0, name
            assert grid["x"] + grid["w"] <= 24, f"{name}: {panel['title']!r}"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    other = cells.setdefault((x, y), panel["title"])
                    assert other == panel["title"], f"{name}: {other!r} overlaps {panel['title']!r}"


def _promql() -> list[tuple[str, str]]:
    return [(q.where, q.expr) for q in dashboard_queries() if q.language == "promql"]


def test_counters_are_only_read_through_rate_over_rate_interval() -> None:
    """Every counter and histogram series is inside rate()/increase() over [$__rate_interval]."""
    metric = re.compile(r"(?<![\w{,=])\s*\b([a-zA-Z_:][\w:]*)\b(?=\s*(?:[{\[),]|$))")
    grouping = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
    checked = 0
    for where, raw in _promql():
        expr = grouping.sub("", raw)
        for match in metric.finditer(expr):
            name = match.group(1)
            assert name.startswith("stepstream_"), f"{where}: foreign metric {name}"
            before, after = expr[: match.start()], expr[match.end() :]
            if name in GAUGES:
                assert not re.match(r"(\{[^{}]*\})?\[", after), f"{where}: {name} ranged"
                assert not re.search(rf"\b(?:{'|'.join(RATE_FUNCTIONS)})\(\s*$", before), (
                    f"{where}: the gauge {name} is not a counter"
                )
                continue
            assert name.endswith(COUNTER_SUFFIXES), f"{where}: unknown metric {name}"
            assert re.search(rf"\b(?:{'|'.join(RATE_FUNCTIONS)})\(\s*$", before), (
                f"{where}: counter {name} is not inside rate()/increase()"
            )
            assert re.match(r"(\{[^{}]*\})?\[\$__rate_interval\]\)", after), (
                f"{where}: {name} is not ranged over [$__rate_interval]"
            )
            checked += 1
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", f"{where}: range [{window}]"
    assert checked >= 10


def test_logql_range_queries_use_auto() -> None:
    """Every LogQL range vector is [$__auto], so Grafana picks the step and the range."""
    ranges = 0
    for query in dashboard_queries():
        if query.language != "logql":
            continue
        for window in re.findall(r"\[([^\]]*)\]", query.expr):
            assert window == "$__auto", f"{query.where}: range [{window}]"
            ranges += 1
    assert ranges >= 2


def test_query_variables_refresh_on_time_range_change(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Query variables reload when the time range changes and offer All as a regex."""
    for name, dashboard in dashboards.items():
        for variable in variables(dashboard):
            if variable.get("type") != "query":
                continue
            where = f"{name}: ${variable['name']}"
            assert variable.get("refresh") == 2, where
            assert variable.get("datasource") == {
                "type": "prometheus",
                "uid": "${prometheus_datasource}",
            }, where
            assert re.fullmatch(r"label_values\(\w+(\{[^{}]*\})?, \w+\)", variable_query(variable))
            if variable.get("includeAll"):
                # Loki refuses {service_name=~".*"} (it matches the empty string).
                wanted = ".+" if variable["name"] == "service" else ".*"
                assert variable.get("allValue") == wanted, where


def _referenced_variables(text: str) -> set[str]:
    names = re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", text)
    return {next(n for n in group if n) for group in names}


def test_every_variable_used_is_defined_and_every_defined_one_is_used(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Queries reference only defined variables, and each defined variable is referenced."""
    for name, dashboard in dashboards.items():
        defined = {v["name"] for v in variables(dashboard)}
        body = {k: v for k, v in dashboard.items() if k != "templating"}
        text = str(body) + str([variable_query(v) for v in variables(dashboard)])
        text += str([v.get("datasource") for v in variables(dashboard)])
        used = _referenced_variables(text) - BUILTIN_VARIABLES
        used = {u for u in used if not u.startswith("__")}
        assert used <= defined, f"{name}: undefined {sorted(used - defined)}"
        assert defined <= used, f"{name}: unused {sorted(defined - used)}"


def test_links_point_at_existing_dashboards_and_variables(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Every /d/<uid> link opens one of our dashboards and sets only variables it has."""
    by_uid = {d["uid"]: d for d in dashboards.values()}
    links = 0
    for name, dashboard in dashboards.items():
        for match in re.finditer(r"/d/([\w-]+)(?:/[\w-]+)?(\?[^\"' ]*)?", str(dashboard)):
            uid, query = match.group(1), match.group(2) or ""
            assert uid in by_uid, f"{name}: link to unknown dashboard {uid}"
            target_vars = {v["name"] for v in variables(by_uid[uid])}
            for var in re.findall(r"var-(\w+)=", query):
                assert var in target_vars, f"{name}: link sets unknown variable {var}"
            links += 1
    assert links >= 3


def _panels_by_type(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for panel in _content_panels(dashboard):
        found.setdefault(panel["type"], []).append(panel)
    return found


def test_overview_has_the_panels_the_issue_lists(dashboards: dict[str, dict[str, Any]]) -> None:
    """The overview shows rates, errors, percentiles with exemplars, and the rest listed."""
    overview = dashboards["overview.json"]
    names = {v["name"] for v in variables(overview)}
    assert {"service", "workflow", "step"} <= names
    exprs = {p["title"]: " ".join(str(t) for t in p["targets"]) for p in _content_panels(overview)}
    assert any("by (stepstream_workflow, stepstream_run_status)" in e for e in exprs.values())
    assert any('stepstream_run_status=~"error|timeout"' in e for e in exprs.values())
    assert any("stepstream_runs_active" in e for e in exprs.values())
    assert any("by (stepstream_event_type)" in e for e in exprs.values())
    assert any("topk(10" in e for e in exprs.values())
    assert any("stepstream_step_status=~" in e for e in exprs.values())
    assert any("stepstream_step_retries_total" in e for e in exprs.values())
    targets = [t for p in _content_panels(overview) for t in p["targets"]]
    quantiles = [t for t in targets if "histogram_quantile" in t.get("expr", "")]
    run_quantiles = {
        t["expr"].split(",")[0] for t in quantiles if "stepstream_run_duration" in t["expr"]
    }
    assert run_quantiles == {
        "histogram_quantile(0.50",
        "histogram_quantile(0.95",
        "histogram_quantile(0.99",
    }
    assert all(t.get("exemplar") for t in quantiles if "stepstream_run_duration" in t["expr"])
    types = _panels_by_type(overview)
    assert len(types["heatmap"]) == 1
    assert types["heatmap"][0]["targets"][0]["format"] == "heatmap"
    tables = [p for p in types["table"] if p["datasource"]["type"] == "tempo"]
    assert len(tables) == 1
    assert tables[0]["targets"][0]["queryType"] == "traceql"
    assert tables[0]["targets"][0]["tableType"] == "traces"
    assert len(types["logs"]) == 1
    assert types["logs"][0]["datasource"]["type"] == "loki"


def test_run_explorer_shows_the_trace_the_log_lines_in_order_and_the_events(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """The run explorer has run_id and trace_id, a trace panel and ascending log panels."""
    explorer = dashboards["run-explorer.json"]
    textboxes = {v["name"] for v in variables(explorer) if v["type"] == "textbox"}
    assert textboxes == {"run_id", "trace_id"}
    types = _panels_by_type(explorer)
    (trace,) = types["traces"]
    assert trace["targets"][0]["query"] == "$trace_id"
    logs = types["logs"]
    assert len(logs) == 2
    assert all(p["options"]["sortOrder"] == "Ascending" for p in logs)
    assert any('|= "stream_event"' in p["targets"][0]["expr"] for p in logs)
    for panel in logs:
        assert (
            "$run_id" in panel["targets"][0]["expr"] or "${run_id}" in panel["targets"][0]["expr"]
        )


def test_the_cluster_view_shows_each_replica_and_the_cluster_metrics(
    dashboards: dict[str, dict[str, Any]],
) -> None:
    """Runs and active runs by replica, queue depth, parked runs, resumes and take-overs."""
    cluster = dashboards[CLUSTER_DASHBOARD]
    assert {v["name"] for v in variables(cluster)} >= {"service", "instance", "workflow"}
    exprs = {p["title"]: p["targets"][0]["expr"] for p in _content_panels(cluster)}
    by_replica = [t for t, e in exprs.items() if "by (service_instance_id)" in e]
    assert len(by_replica) == 4, by_replica
    for metric in (
        "stepstream_run_duration_seconds_count",
        "stepstream_runs_active",
        "stepstream_queue_depth",
        "stepstream_runs_parked",
        "stepstream_runs_resumed_total",
        "stepstream_runs_failed_over_total",
    ):
        assert sum(metric in e for e in exprs.values()) == 1, metric
    assert all('service_name=~"$service"' in e for e in exprs.values())
