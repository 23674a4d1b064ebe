"""Telemetry survives any payload and any error: nothing is dropped, every span ends.

A step error holding a lone surrogate (a non-UTF-8 file name), an event pydantic cannot
serialise, an exception whose ``__str__`` raises: the run is still recorded completely,
with the strings made safe (surrogates escaped) and, for an event that cannot be
encoded, a placeholder payload naming the reason (type and seq intact).
"""

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.trace import StatusCode
from pydantic import field_serializer

from _helpers import otlp_attrs
from _helpers import otlp_spans
from _helpers import read_json_lines
from _helpers import run_script
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowRuntimeError
from stepstream import step
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry import error_text
from stepstream.telemetry import safe_text
from stepstream.testing import CapturedTelemetry

#: What os.fsdecode makes of a Latin-1 file name on a UTF-8 system: a lone surrogate.
UNREADABLE_NAME = os.fsdecode(b"caf\xe9.txt")
ESCAPED_NAME = "caf\\udce9.txt"


def runs_active(metrics_file: Path) -> int:
    """The last value of ``stepstream.runs.active`` in an OTLP/JSON metrics file."""
    values = [
        int(point["asInt"])
        for line in read_json_lines(metrics_file)
        for rm in line["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for metric in sm["metrics"]
        if metric["name"] == attrs.METRIC_RUNS_ACTIVE
        for point in metric["sum"]["dataPoints"]
    ]
    assert values, "stepstream.runs.active was never exported"
    return values[-1]


def sink_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Messages of the 'telemetry sink failed' diagnostics logged during the test."""
    return [r.getMessage() for r in caplog.records if "failed; later failures" in r.getMessage()]


# -- a step error with a lone surrogate, recorded to files by configure_telemetry() -----------

SURROGATE_FAILURE = """
import asyncio
import os

import stepstream
from stepstream import StartEvent, StopEvent, Workflow, step


class Unreadable(Workflow):
    @step
    async def read(self, ev: StartEvent) -> StopEvent:
        name = os.fsdecode(b"caf\\xe9.txt")
        raise ValueError(f"cannot read {name}")


async def main() -> None:
    handle = stepstream.configure_telemetry(directory="tel")
    try:
        await Unreadable(timeout=5).run()
    except ValueError:
        pass
    handle.shutdown()


asyncio.run(main())
"""


@pytest.fixture(scope="module")
def surrogate_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The telemetry directory of a run whose step failed with a lone surrogate; stderr."""
    tmp = tmp_path_factory.mktemp("surrogate")
    proc: subprocess.CompletedProcess[str] = run_script(tmp, SURROGATE_FAILURE)
    assert proc.returncode == 0, proc.stderr
    return tmp / "tel", proc.stderr


def test_surrogate_error_leaves_a_complete_trace_file(surrogate_run: tuple[Path, str]) -> None:
    """Both spans reach traces.jsonl, ended with status ERROR and the message escaped."""
    folder, _ = surrogate_run
    spans = {span["name"]: span for span in otlp_spans(folder / "traces.jsonl")}
    assert set(spans) == {"invoke_workflow Unreadable", "run_step read"}
    run, step_span = spans["invoke_workflow Unreadable"], spans["run_step read"]
    assert otlp_attrs(run)[attrs.RUN_STATUS] == "error"
    assert otlp_attrs(step_span)[attrs.STEP_STATUS] == "error"
    for span in (run, step_span):
        assert span["status"]["code"] == StatusCode.ERROR.value
        assert span["status"]["message"] == f"ValueError: cannot read {ESCAPED_NAME}"
    exception = next(e for e in step_span["events"] if e["name"] == "exception")
    assert otlp_attrs(exception)["exception.message"] == f"cannot read {ESCAPED_NAME}"
    terminal = otlp_attrs(next(e for e in run["events"] if e["name"] == attrs.STREAM_EVENT))
    assert terminal[attrs.EVENT_TYPE] == "WorkflowFailedEvent"
    payload = json.loads(terminal[attrs.EVENT_PAYLOAD])
    assert payload["exception"]["exception_message"] == f"cannot read {ESCAPED_NAME}"


def test_surrogate_error_leaves_every_lifecycle_line(surrogate_run: tuple[Path, str]) -> None:
    """step_failed, the terminal stream_event and run_finished are all in logs.jsonl."""
    folder, _ = surrogate_run
    lines = read_json_lines(folder / "logs.jsonl")
    assert [line["event"] for line in lines] == [
        attrs.LOG_RUN_STARTED,
        attrs.LOG_STEP_STARTED,
        attrs.LOG_STEP_FAILED,
        attrs.LOG_STREAM_EVENT,
        attrs.LOG_RUN_FINISHED,
    ]
    failed, terminal, finished = lines[2:]
    assert failed["error"] == finished["error"] == f"cannot read {ESCAPED_NAME}"
    assert terminal["event_type"] == "WorkflowFailedEvent"
    assert json.loads(terminal["payload"])["exception"]["exception_message"] == (
        f"cannot read {ESCAPED_NAME}"
    )
    assert finished["status"] == "error"


def test_surrogate_error_returns_the_gauge_and_stays_quiet(
    surrogate_run: tuple[Path, str],
) -> None:
    """stepstream.runs.active goes back to 0 and nothing reaches stderr."""
    folder, stderr = surrogate_run
    assert stderr == ""
    assert runs_active(folder / "metrics.jsonl") == 0


USER_SPAN = """
import asyncio
import os

from opentelemetry import trace

import stepstream
from stepstream import StartEvent, StopEvent, Workflow, step


class Lists(Workflow):
    @step
    async def scan(self, ev: StartEvent) -> StopEvent:
        name = os.fsdecode(b"caf\\xe9.txt")
        with trace.get_tracer("app").start_as_current_span(f"open {name}") as span:
            span.set_attribute("app.path", name)
            span.set_attribute("app.paths", [name, "ok"])
        return StopEvent(result="listed")


async def main() -> None:
    handle = stepstream.configure_telemetry(directory="tel")
    assert await Lists(timeout=5).run() == "listed"
    handle.shutdown()


asyncio.run(main())
"""


def test_user_span_with_a_surrogate_is_exported_escaped(tmp_path: Path) -> None:
    """A step's own span with a lone surrogate neither fails the step nor leaves the file."""
    proc = run_script(tmp_path, USER_SPAN)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    spans = {span["name"]: span for span in otlp_spans(tmp_path / "tel" / "traces.jsonl")}
    assert set(spans) == {"invoke_workflow Lists", "run_step scan", f"open {ESCAPED_NAME}"}
    mine = spans[f"open {ESCAPED_NAME}"]
    assert otlp_attrs(mine)["app.path"] == ESCAPED_NAME
    assert mine["attributes"][1]["value"]["arrayValue"]["values"][0] == {
        "stringValue": ESCAPED_NAME
    }


# -- events pydantic cannot serialise ------------------------------------------------------------


class Payload(Event):
    """An event holding anything."""

    value: Any = None


class SerializerRaises(Event):
    """An event whose field serializer raises."""

    value: int = 0

    @field_serializer("value")
    def _explode(self, value: int) -> int:
        msg = "the serializer gave up"
        raise RuntimeError(msg)


class ReprRaises:
    """Not JSON, and its repr (pydantic's fallback) raises."""

    def __repr__(self) -> str:
        msg = "no repr today"
        raise RuntimeError(msg)


def cyclic() -> dict[str, Any]:
    """A dict that contains itself."""
    loop: dict[str, Any] = {}
    loop["self"] = loop
    return loop


def deep(levels: int) -> list[Any]:
    """A list nested ``levels`` deep."""
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


UNENCODABLE = [
    pytest.param(lambda: Payload(value=b"\xff\xfe"), "invalid utf-8", id="invalid-utf8-bytes"),
    pytest.param(lambda: Payload(value=cyclic()), "Circular reference", id="cyclic-dict"),
    pytest.param(lambda: Payload(value=deep(5_000)), "", id="deep-nesting"),
    pytest.param(SerializerRaises, "the serializer gave up", id="field-serializer"),
    pytest.param(lambda: Payload(value=ReprRaises()), "no repr today", id="repr-raises"),
    pytest.param(lambda: Event(loop=cyclic()), "Circular reference", id="dynamic-cyclic"),
]


class Streams(Workflow):
    """Streams the event its start event carries, then stops."""

    @step
    async def emit(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(ev["make"]())
        return StopEvent(result="done")


def streamed(tel: CapturedTelemetry, seq: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The span event and the log line recorded for stream position ``seq``."""
    events = [dict(e.attributes or {}) for e in tel.span_events()]
    found = [e for e in events if e[attrs.EVENT_SEQ] == seq]
    lines = [line for line in tel.lines(attrs.LOG_STREAM_EVENT) if line["seq"] == seq]
    assert len(found) == len(lines) == 1, (found, lines)
    return found[0], lines[0]


@pytest.mark.parametrize(("make", "reason"), UNENCODABLE)
@pytest.mark.asyncio
async def test_unencodable_event_is_recorded_with_a_placeholder(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture, make: Any, reason: str
) -> None:
    """The span event and the log line exist, type and seq intact, payload naming why."""
    assert await Streams(timeout=10).run(make=make) == "done"
    span_event, line = streamed(tel, 0)
    for payload, kind in (
        (span_event[attrs.EVENT_PAYLOAD], span_event[attrs.EVENT_TYPE]),
        (line["payload"], line["event_type"]),
    ):
        assert kind == type(make()).__name__
        placeholder = json.loads(payload)
        assert isinstance(placeholder, str)
        assert placeholder.startswith("<unserialisable: ")
        assert reason in placeholder
    assert [line["event_type"] for line in tel.lines(attrs.LOG_STREAM_EVENT)] == [
        type(make()).__name__,
        "StopEvent",
    ]
    assert sink_failures(caplog) == []
    assert tel.all_spans_ended_once()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(
            lambda: Payload(value=UNREADABLE_NAME), {"value": ESCAPED_NAME}, id="declared-field"
        ),
        pytest.param(lambda: Event(path=UNREADABLE_NAME), {"path": ESCAPED_NAME}, id="dynamic"),
        pytest.param(
            lambda: Payload(value={UNREADABLE_NAME: [UNREADABLE_NAME]}),
            {"value": {ESCAPED_NAME: [ESCAPED_NAME]}},
            id="nested",
        ),
    ],
)
@pytest.mark.asyncio
async def test_surrogates_in_a_payload_are_escaped(
    tel: CapturedTelemetry,
    caplog: pytest.LogCaptureFixture,
    make: Any,
    expected: dict[str, Any],
) -> None:
    """A payload whose only problem is a lone surrogate is recorded whole, escaped."""
    assert await Streams(timeout=10).run(make=make) == "done"
    span_event, line = streamed(tel, 0)
    assert json.loads(span_event[attrs.EVENT_PAYLOAD]) == expected
    assert json.loads(line["payload"]) == expected
    assert sink_failures(caplog) == []


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: Payload(value=float("nan")), id="declared-field"),
        pytest.param(lambda: Event(value=float("inf")), id="dynamic-field"),
    ],
)
@pytest.mark.asyncio
async def test_non_finite_floats_are_recorded_as_strict_json(
    tel: CapturedTelemetry, make: Any
) -> None:
    """NaN and infinity become null, as pydantic dumps declared fields: the payload is JSON."""
    assert await Streams(timeout=10).run(make=make) == "done"
    span_event, line = streamed(tel, 0)
    for payload in (span_event[attrs.EVENT_PAYLOAD], line["payload"]):
        assert orjson.loads(payload) == {"value": None}


# -- exceptions and results that cannot be printed ------------------------------------------------


class UnprintableError(Exception):
    """An error whose __str__ raises."""

    def __str__(self) -> str:
        msg = "no str for you"
        raise RuntimeError(msg)


class FailsUnprintably(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        raise UnprintableError


class ReturnsUnprintable(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        return ReprRaises()  # type: ignore[return-value]  # the bug under test


@pytest.mark.asyncio
async def test_error_whose_str_raises_is_a_failure_not_a_cancellation(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """The run fails with the error itself; both spans end with ERROR, every line written."""
    with pytest.raises(UnprintableError):
        await FailsUnprintably(timeout=5).run()
    run = tel.one("invoke_workflow FailsUnprintably")
    step_span = tel.one("run_step explode")
    assert (run.attributes or {})[attrs.RUN_STATUS] == "error"
    assert (step_span.attributes or {})[attrs.STEP_STATUS] == "error"
    text = "<unprintable UnprintableError: str() raised RuntimeError: no str for you>"
    for span in (run, step_span):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"UnprintableError: {text}"
    assert [line["event"] for line in tel.logs] == [
        attrs.LOG_RUN_STARTED,
        attrs.LOG_STEP_STARTED,
        attrs.LOG_STEP_FAILED,
        attrs.LOG_STREAM_EVENT,
        attrs.LOG_RUN_FINISHED,
    ]
    assert tel.lines(attrs.LOG_STEP_FAILED)[0]["error"] == text
    terminal = json.loads(tel.lines(attrs.LOG_STREAM_EVENT)[0]["payload"])
    assert terminal["exception"]["exception_message"] == text
    assert tel.metric_sum(attrs.METRIC_RUNS_ACTIVE) == 0
    assert sink_failures(caplog) == []
    assert tel.all_spans_ended_once()


@pytest.mark.asyncio
async def test_returned_non_event_whose_repr_raises_fails_the_step(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """The step fails with the usual WorkflowRuntimeError, not an internal error or a cancel."""
    with pytest.raises(WorkflowRuntimeError) as caught:
        await ReturnsUnprintable(timeout=5).run()
    assert str(caught.value) == (
        "step 'explode' returned ReprRaises (<ReprRaises object; repr() raised RuntimeError>); "
        "steps must return an Event instance or None"
    )
    run = tel.one("invoke_workflow ReturnsUnprintable")
    assert (run.attributes or {})[attrs.RUN_STATUS] == "error"
    assert (tel.one("run_step explode").attributes or {})[attrs.STEP_STATUS] == "error"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tel.all_spans_ended_once()


class ReturnsUnprintableList(Workflow):
    @step
    async def explode(self, ev: StartEvent) -> StopEvent:
        return [ReprRaises()]  # type: ignore[return-value]  # the bug under test


@pytest.mark.asyncio
async def test_returned_list_whose_repr_raises_fails_the_step(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A list returned by a step that does not fan out: a clear failure, whatever its repr."""
    with pytest.raises(WorkflowRuntimeError) as caught:
        await ReturnsUnprintableList(timeout=5).run()
    assert str(caught.value) == (
        "step 'explode' returned a list (<list object; repr() raised RuntimeError>), but its "
        "return annotation declares no list[E]; annotate it `-> list[E]` to fan out, or "
        "return one Event"
    )
    assert (tel.one("run_step explode").attributes or {})[attrs.STEP_STATUS] == "error"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert tel.all_spans_ended_once()


@pytest.mark.asyncio
async def test_verbose_line_for_an_error_whose_str_raises(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """verbose=True prints the failure with a placeholder for the message; no sink fails."""
    with pytest.raises(UnprintableError):
        await FailsUnprintably(timeout=5, verbose=True).run()
    failed = [line for line in capsys.readouterr().err.splitlines() if "explode error" in line]
    assert failed == [
        (
            "[stepstream] step explode error: UnprintableError: "
            "<unprintable UnprintableError: str() raised RuntimeError: no str for you>"
        )
    ]
    assert sink_failures(caplog) == []


# -- the helpers observers use --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "text"),
    [
        pytest.param(
            ValueError(f"cannot read {UNREADABLE_NAME}"),
            f"cannot read {ESCAPED_NAME}",
            id="surrogate",
        ),
        pytest.param(
            UnprintableError(),
            "<unprintable UnprintableError: str() raised RuntimeError: no str for you>",
            id="str-raises",
        ),
        pytest.param(KeyError("k"), "'k'", id="ordinary"),
    ],
)
def test_error_text_never_raises_and_is_always_encodable(error: BaseException, text: str) -> None:
    """stepstream.telemetry.error_text: str(error), made safe for any encoder."""
    assert error_text(error) == text
    error_text(error).encode("utf-8")


def test_safe_text_escapes_lone_surrogates_only() -> None:
    """safe_text leaves valid text alone (the same object) and escapes lone surrogates."""
    text = "naïve 🐍"
    assert safe_text(text) is text
    assert safe_text(UNREADABLE_NAME) == ESCAPED_NAME
