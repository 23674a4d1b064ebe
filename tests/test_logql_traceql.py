"""Every LogQL and TraceQL expression parses with Grafana's own parsers and names only
labels, fields and span attributes that stepstream's telemetry contract defines.

The parsers are the npm packages @grafana/lezer-logql and @grafana/lezer-traceql (the
grammars of Grafana's query editors), run by tests/lezer_parse.mjs under node; they are
installed into .cache/lezer by .ci/deps-deploy.sh (the fixture runs it when missing).

What the contract means in Loki: the stack sends logs to Loki's OTLP endpoint, so the
record's attributes (stepstream's log keys: run_id, workflow, step, event_type, ...) and
its trace_id and span_id are structured metadata, the resource's service.name is the
index label service_name, the record's severity (the contract's ``level``) is
severity_text, and the message (run_started, stream_event, ...) is the log line.
"""

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from _dashboard_queries import DATASOURCES_FILE
from _dashboard_queries import SAMPLE_RUN_ID
from _dashboard_queries import SAMPLE_TRACE_ID
from _dashboard_queries import Query
from _dashboard_queries import dashboard_queries
from _dashboard_queries import datasource_link_queries
from _dashboard_queries import ensure_tool
from _dashboard_queries import load_yaml
from _dashboard_queries import substitute
from _dashboard_queries import substitute_link
from _helpers import ROOT
from stepstream.telemetry import attributes as attrs

LEZER_DIR = ROOT / ".cache" / "lezer"
SCRIPT = ROOT / "tests" / "lezer_parse.mjs"
VALUES = {
    "service": ".+",
    "workflow": ".*",
    "step": ".*",
    "run_id": SAMPLE_RUN_ID,
    "trace_id": SAMPLE_TRACE_ID,
}


def _constants(prefix: str) -> set[str]:
    return {
        value
        for name, value in vars(attrs).items()
        if name.startswith(prefix) and isinstance(value, str)
    }


#: The log keys of the contract (attributes.KEY_*), as Loki structured metadata.
LOG_KEYS = _constants("KEY_")
#: The log messages of the contract (attributes.LOG_*): the log line in Loki.
LOG_MESSAGES = _constants("LOG_") - {attrs.LOGGER_NAME}
#: What Loki's OTLP ingestion adds: the resource's service.name as the index label
#: service_name, and the record's severity (the contract's level) as severity_text.
LOKI_OTLP_NAMES = {"service_name", "severity_text"}
#: Severity texts stepstream's OTLP log records carry (its levels, upper-cased).
SEVERITIES = {"DEBUG", "INFO", "WARNING", "ERROR"}

#: Span attributes of the contract: run and step spans, and span events.
SPAN_ATTRIBUTES = {
    attrs.GEN_AI_OPERATION_NAME,
    attrs.GEN_AI_WORKFLOW_NAME,
    attrs.ERROR_TYPE,
    attrs.WORKFLOW,
    attrs.RUN_ID,
    attrs.RUN_STATUS,
    attrs.STEP,
    attrs.STEP_ATTEMPT,
    attrs.STEP_WORKER,
    attrs.STEP_STATUS,
    attrs.EVENT_IN,
    attrs.EVENT_OUT,
    attrs.EVENTS_STREAMED,
}
EVENT_ATTRIBUTES = {attrs.EVENT_TYPE, attrs.EVENT_SEQ, attrs.EVENT_PAYLOAD, attrs.WAIT_EVENT_TYPE}
RESOURCE_ATTRIBUTES = {"service.name"}
INTRINSICS = {"name", "status", "duration", "kind", "trace:id", "span:name", "span:status"}
STATUSES = _constants("STATUS_")


@dataclass(frozen=True)
class Parsed:
    """The parser's verdict on one expression and the named nodes of its tree."""

    query: Query
    text: str
    ok: bool
    errors: list[int]
    nodes: list[tuple[str, str]]


@pytest.fixture(scope="module")
def node() -> str:
    """The node executable, with the Lezer parsers installed in .cache/lezer."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip("node is not installed: the LogQL/TraceQL parsers are npm packages")
    installed = all(
        (LEZER_DIR / "node_modules" / "@grafana" / name / "package.json").is_file()
        for name in ("lezer-logql", "lezer-traceql")
    )
    problem = ensure_tool("lezer", installed, timeout=300)
    if problem is not None:
        pytest.skip(f"Grafana's Lezer parsers could not be installed: {problem}")
    return binary


def _parse(node: str, items: list[tuple[Query, str]]) -> list[Parsed]:
    request = [{"lang": q.language, "expr": text} for q, text in items]
    done = subprocess.run(
        [node, str(SCRIPT), str(LEZER_DIR)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers: list[dict[str, Any]] = json.loads(done.stdout)
    return [
        Parsed(q, text, a["ok"], a["errors"], [(n, t) for n, t in a["nodes"]])
        for (q, text), a in zip(items, answers, strict=True)
    ]


def _queries() -> list[tuple[Query, str]]:
    found = [q for q in dashboard_queries() if q.language in {"logql", "traceql"}]
    found += [q for q in datasource_link_queries() if q.language == "logql"]
    return [(q, substitute(substitute_link(q.expr), VALUES)) for q in found]


@pytest.fixture(scope="module")
def parsed(node: str) -> list[Parsed]:
    """Every LogQL and TraceQL expression of the dashboards and datasource links, parsed."""
    return _parse(node, _queries())


def _of(parsed: list[Parsed], language: str) -> Iterator[Parsed]:
    return (p for p in parsed if p.query.language == language)


def test_there_are_logql_and_traceql_queries(parsed: list[Parsed]) -> None:
    """The dashboards hold LogQL (logs and metric queries) and TraceQL (searches)."""
    assert sum(1 for _ in _of(parsed, "logql")) >= 6
    assert sum(1 for _ in _of(parsed, "traceql")) >= 2


def test_every_expression_parses(parsed: list[Parsed]) -> None:
    """Grafana's parsers find no error node in any expression."""
    bad = {p.query.where: (p.text, p.errors) for p in parsed if not p.ok}
    assert not bad


def test_the_parsers_reject_malformed_expressions(node: str) -> None:
    """The check has teeth: a dangling line filter and an empty comparison fail to parse."""
    broken = [
        (Query("logql", "", "broken logql"), '{service_name="x"} |= '),
        (Query("logql", "", "broken logql"), 'sum(rate({service_name="x"}[1m])'),
        (Query("traceql", "", "broken traceql"), "{ span.stepstream.run_id = }"),
        (Query("traceql", "", "broken traceql"), '{ span.stepstream.workflow = "a" '),
    ]
    assert [p.ok for p in _parse(node, broken)] == [False] * 4


def _logql_names(p: Parsed) -> set[str]:
    """Label and field names: matchers, label filters, grouping, line_format fields."""
    names = {text for name, text in p.nodes if name == "Identifier"}
    for name, text in p.nodes:
        if name == "LineFormatExpr":
            for action in re.findall(r"\{\{(.*?)\}\}", text):
                names |= set(re.findall(r"(?<![\w.])\.(\w+)", action))
    return names


def test_logql_names_only_contract_keys(parsed: list[Parsed]) -> None:
    """Every label, structured-metadata field and template field is a contract log key."""
    allowed = LOG_KEYS | LOKI_OTLP_NAMES
    seen: set[str] = set()
    for p in _of(parsed, "logql"):
        names = _logql_names(p)
        assert names - allowed == set(), f"{p.query.where}: {sorted(names - allowed)}"
        seen |= names
    assert {"run_id", "trace_id", "workflow", "event_type", "service_name"} <= seen


def test_logql_line_filters_and_severities_are_contract_values(parsed: list[Parsed]) -> None:
    """Line filters match contract log messages; severity filters name real severities."""
    messages: set[str] = set()
    for p in _of(parsed, "logql"):
        for name, text in p.nodes:
            if name == "LineFilter":
                value = re.fullmatch(r'\|=\s*"([^"]*)"', text)
                assert value, f"{p.query.where}: line filter {text}"
                messages.add(value.group(1))
            if name == "Matcher" and text.startswith("severity_text"):
                value = re.fullmatch(r'severity_text\s*=\s*"([^"]*)"', text)
                assert value, f"{p.query.where}: {text}"
                assert value.group(1) in SEVERITIES, text
    assert messages
    assert messages <= LOG_MESSAGES


def _traceql_attributes(p: Parsed) -> Iterator[tuple[str, str]]:
    """Yield (scope, attribute) of every attribute field, and ("intrinsic", name)."""
    for name, text in p.nodes:
        if name == "AttributeField":
            scope, _, attribute = text.partition(".")
            yield (scope or "unscoped"), attribute
        elif name == "IntrinsicField":
            yield "intrinsic", text


def test_traceql_names_only_contract_attributes(parsed: list[Parsed]) -> None:
    """Span, event and resource attributes are in the contract; intrinsics are TraceQL's."""
    allowed = {
        "span": SPAN_ATTRIBUTES,
        "event": EVENT_ATTRIBUTES,
        "resource": RESOURCE_ATTRIBUTES,
        "intrinsic": INTRINSICS,
    }
    seen: set[str] = set()
    for p in _of(parsed, "traceql"):
        for scope, attribute in _traceql_attributes(p):
            assert scope in allowed, f"{p.query.where}: scope {scope!r} of {attribute}"
            assert attribute in allowed[scope], f"{p.query.where}: {scope}.{attribute}"
            seen.add(attribute)
    assert {attrs.RUN_STATUS, attrs.RUN_ID, attrs.WORKFLOW} <= seen


def test_status_values_in_queries_are_contract_statuses(parsed: list[Parsed]) -> None:
    """Values compared with a status attribute are ok, error, timeout or cancelled."""
    checked = 0
    for p in _of(parsed, "traceql"):
        for match in re.finditer(
            r"span\.stepstream\.(?:run|step)\.status\s*=~?\s*\"([^\"]*)\"", p.text
        ):
            assert set(match.group(1).split("|")) <= STATUSES, f"{p.query.where}: {match.group(0)}"
            checked += 1
    for query in dashboard_queries():
        for match in re.finditer(r"stepstream_(?:run|step)_status=~?\"([^\"]*)\"", query.expr):
            assert set(match.group(1).split("|")) <= STATUSES, f"{query.where}: {match.group(0)}"
            checked += 1
    assert checked >= 3


def test_the_loki_derived_field_reads_a_contract_key() -> None:
    """The Loki datasource's trace link reads the trace_id field that every line carries."""
    loki = next(d for d in load_yaml(DATASOURCES_FILE)["datasources"] if d["type"] == "loki")
    (field,) = loki["jsonData"]["derivedFields"]
    assert field["matcherType"] == "label"
    assert field["matcherRegex"] == attrs.KEY_TRACE_ID
    assert field["datasourceUid"] == "tempo"
