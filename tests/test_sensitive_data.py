"""Keeping data out of telemetry without changing the event classes.

``Workflow(redact=...)`` and ``configure_telemetry(redact=...)`` pass every payload
through a hook before any span event, log line or OTLP record is built; an event class
declared with ``telemetry_payload=False`` records its type and seq only; pydantic's
``SecretStr`` and ``Field(exclude=True)`` work as they do in any dump. Payload limits:
``payload_limit`` (span events) rejects negative values, ``log_payload_limit`` cuts log
lines (default: complete).
"""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field
from pydantic import SecretStr

from _helpers import otlp_attrs
from _helpers import otlp_spans
from _helpers import read_json_lines
from _helpers import run_script
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowValidationError
from stepstream import step
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

SECRET = "hunter2-do-not-log"  # noqa: S105 - a fake secret the tests look for


class Login(Event):
    """An ordinary event carrying a secret."""

    user: str
    password: str


class Credentials(Event, telemetry_payload=False):
    """An event whose payload never reaches telemetry."""

    token: str


class RotatedCredentials(Credentials):
    """Inherits the opt-out."""


class PublicCredentials(Credentials, telemetry_payload=True):
    """Opts back in."""


class Masked(Event):
    """pydantic's own tools: a SecretStr and an excluded field."""

    api_key: SecretStr
    internal: str = Field(default="", exclude=True)
    visible: str = ""


class Emits(Workflow):
    """Streams the events its start event carries, then stops with ``result``."""

    @step
    async def emit(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for event in ev["events"]:
            ctx.write_event_to_stream(event)
        return StopEvent(result=ev.get("result"))


def payloads(tel: CapturedTelemetry) -> list[tuple[str, Any, Any]]:
    """(event type, span event payload, log line payload) per streamed event, by seq."""
    span_events = {}
    for event in tel.span_events():
        recorded = dict(event.attributes or {})
        span_events[recorded[attrs.EVENT_SEQ]] = recorded
    out = []
    for line in sorted(tel.lines(attrs.LOG_STREAM_EVENT), key=lambda line: line["seq"]):
        span_event = span_events[line["seq"]]
        assert span_event[attrs.EVENT_TYPE] == line["event_type"]
        out.append((line["event_type"], span_event.get(attrs.EVENT_PAYLOAD), line.get("payload")))
    return out


def everything_recorded(tel: CapturedTelemetry) -> str:
    """Every span (attributes, events) and log line the runs left, as one text."""
    spans = [
        [dict(s.attributes or {}), [(e.name, dict(e.attributes or {})) for e in s.events]]
        for s in tel.spans
    ]
    return json.dumps([spans, tel.logs], default=str)


def drop_password(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
    """A redact hook: remove the password field wherever it appears."""
    payload.pop("password", None)
    return payload


# -- the redact hook ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_workflow_redact_hook_keeps_a_field_out_of_spans_and_logs(
    tel: CapturedTelemetry,
) -> None:
    """Workflow(redact=...) changes what every span event and log line records."""
    events = [Login(user="ada", password=SECRET)]
    await Emits(timeout=5, redact=drop_password).run(events=events)
    assert payloads(tel) == [
        ("Login", '{"user":"ada"}', '{"user":"ada"}'),
        ("StopEvent", "{}", "{}"),
    ]
    assert SECRET not in everything_recorded(tel)


@pytest.mark.asyncio
async def test_redact_sees_the_event_and_covers_the_terminal_event(
    tel: CapturedTelemetry,
) -> None:
    """The hook gets each event and its payload, the StopEvent with its result included."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
        seen.append((type(event).__name__, dict(payload)))
        return {k: "***" if k == "result" else v for k, v in payload.items()}

    await Emits(timeout=5, redact=record).run(events=[Event(n=1)], result=SECRET)
    assert seen == [("Event", {"n": 1}), ("StopEvent", {"result": SECRET})]
    assert payloads(tel)[-1] == ("StopEvent", '{"result":"***"}', '{"result":"***"}')
    assert SECRET not in everything_recorded(tel)


@pytest.mark.asyncio
async def test_redact_returning_none_records_type_and_seq_only(tel: CapturedTelemetry) -> None:
    """A hook returning None leaves the payload out of the span event and the log line."""

    def hide_logins(event: Event, payload: dict[str, Any]) -> dict[str, Any] | None:
        return None if isinstance(event, Login) else payload

    await Emits(timeout=5, redact=hide_logins).run(events=[Login(user="a", password=SECRET)])
    assert payloads(tel) == [("Login", None, None), ("StopEvent", "{}", "{}")]
    assert SECRET not in everything_recorded(tel)


@pytest.mark.asyncio
async def test_redact_hook_that_raises_records_a_placeholder_not_the_payload(
    tel: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken hook never leaks what it was to remove: the payload names its error type."""

    def broken(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
        raise KeyError(SECRET)

    assert (
        await Emits(timeout=5, redact=broken).run(events=[Login(user="a", password=SECRET)]) is None
    )
    placeholder = json.dumps("<redact failed: KeyError>")
    assert payloads(tel) == [
        ("Login", placeholder, placeholder),
        ("StopEvent", placeholder, placeholder),
    ]
    assert SECRET not in everything_recorded(tel)
    assert SECRET not in caplog.text
    assert tel.all_spans_ended_once()


def test_redact_that_is_not_callable_is_refused() -> None:
    """Workflow(redact=...) must be a function."""
    with pytest.raises(WorkflowValidationError) as caught:
        Emits(redact="password")  # type: ignore[arg-type]  # the mistake under test
    assert str(caught.value) == (
        "Emits(redact=...) must be a function (event, payload) -> payload or None, got str"
    )


# -- per-class opt-out ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_class_declared_telemetry_payload_false_records_type_and_seq_only(
    tel: CapturedTelemetry,
) -> None:
    """telemetry_payload=False holds for the class and its subclasses, unless they opt back in."""
    events = [
        Credentials(token=SECRET),
        RotatedCredentials(token=SECRET),
        PublicCredentials(token="public"),  # noqa: S106 - not a password
    ]
    await Emits(timeout=5).run(events=events)
    assert payloads(tel) == [
        ("Credentials", None, None),
        ("RotatedCredentials", None, None),
        ("PublicCredentials", '{"token":"public"}', '{"token":"public"}'),
        ("StopEvent", "{}", "{}"),
    ]
    assert [line["seq"] for line in tel.lines(attrs.LOG_STREAM_EVENT)] == [0, 1, 2, 3]
    assert SECRET not in everything_recorded(tel)


@pytest.mark.asyncio
async def test_opted_out_class_is_not_passed_to_the_redact_hook(tel: CapturedTelemetry) -> None:
    """The opt-out comes first: the hook never sees such an event."""
    seen: list[str] = []

    def record(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(type(event).__name__)
        return payload

    await Emits(timeout=5, redact=record).run(events=[Credentials(token=SECRET)])
    assert seen == ["StopEvent"]
    assert SECRET not in everything_recorded(tel)


def test_telemetry_payload_must_be_a_bool() -> None:
    """A class keyword other than True or False is refused when the class is defined."""
    with pytest.raises(WorkflowValidationError) as caught:

        class Odd(Event, telemetry_payload="no"):  # the mistake under test
            pass

    assert str(caught.value) == (
        "class Odd(Event, telemetry_payload=...) must be True or False, got 'no'"
    )


@pytest.mark.asyncio
async def test_secretstr_and_excluded_fields_stay_out(tel: CapturedTelemetry) -> None:
    """pydantic's SecretStr is masked and Field(exclude=True) left out, as in any dump."""
    event = Masked(api_key=SecretStr(SECRET), internal=SECRET, visible="v")
    await Emits(timeout=5).run(events=[event])
    expected = '{"api_key":"**********","visible":"v"}'
    assert payloads(tel)[0] == ("Masked", expected, expected)
    assert SECRET not in everything_recorded(tel)


# -- configure_telemetry(redact=..., log_payload_limit=...) --------------------------------------

CONFIGURED = """
import asyncio
from typing import Any

import stepstream
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Login(Event):
    user: str
    password: str


class Note(Event):
    text: str


class Emits(Workflow):
    @step
    async def emit(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Login(user="ada", password="{secret}"))
        ctx.write_event_to_stream(Note(text="x" * 100))
        return StopEvent(result="done")


def no_password(event: Event, payload: dict[str, Any]) -> dict[str, Any]:
    payload.pop("password", None)
    return payload


def hide_notes(event: Event, payload: dict[str, Any]) -> dict[str, Any] | None:
    return None if isinstance(event, Note) else payload


async def main() -> None:
    handle = stepstream.configure_telemetry(directory="tel", redact=no_password)
    assert await Emits(timeout=5, redact=hide_notes).run() == "done"
    handle.shutdown()


asyncio.run(main())
"""


def test_configured_redact_hook_and_the_workflows_both_apply(tmp_path: Path) -> None:
    """configure_telemetry(redact=...) applies to every run, after the workflow's own hook."""
    proc = run_script(tmp_path, CONFIGURED.replace("{secret}", SECRET))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    folder = tmp_path / "tel"
    for name in ("traces.jsonl", "logs.jsonl"):
        assert SECRET not in (folder / name).read_text(encoding="utf-8")
    lines = [
        line
        for line in read_json_lines(folder / "logs.jsonl")
        if line["event"] == attrs.LOG_STREAM_EVENT
    ]
    assert [(line["event_type"], line.get("payload")) for line in lines] == [
        ("Login", '{"user":"ada"}'),
        ("Note", None),
        ("StopEvent", '{"result":"done"}'),
    ]
    events = [
        otlp_attrs(e)
        for span in otlp_spans(folder / "traces.jsonl")
        for e in span.get("events", [])
    ]
    assert [
        e.get(attrs.EVENT_PAYLOAD) for e in sorted(events, key=lambda e: e[attrs.EVENT_SEQ])
    ] == [
        '{"user":"ada"}',
        None,
        '{"result":"done"}',
    ]


LOG_LIMIT = """
import asyncio
from typing import Any

import stepstream
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Note(Event):
    text: str


class Emits(Workflow):
    @step
    async def emit(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(text="x" * 100))
        return StopEvent(result="done")


async def main() -> None:
    handle = stepstream.configure_telemetry(directory="tel", log_payload_limit=40)
    assert await Emits(timeout=5).run() == "done"
    handle.shutdown()


asyncio.run(main())
"""


def test_log_payload_limit_cuts_log_lines_only(tmp_path: Path) -> None:
    """log_payload_limit=40 cuts the log line's payload; the span event keeps its own limit."""
    proc = run_script(tmp_path, LOG_LIMIT)
    assert proc.returncode == 0, proc.stderr
    full = json.dumps({"text": "x" * 100}, separators=(",", ":"))
    (line,) = [
        line
        for line in read_json_lines(tmp_path / "tel" / "logs.jsonl")
        if line.get("event_type") == "Note"
    ]
    assert line["payload"] == full[:40] + f"...[truncated {len(full) - 40} chars]"
    (span,) = [
        s for s in otlp_spans(tmp_path / "tel" / "traces.jsonl") if s["name"] == "run_step emit"
    ]
    assert otlp_attrs(span["events"][0])[attrs.EVENT_PAYLOAD] == full


NEGATIVE_LIMIT = """
import json
import stepstream
from stepstream import WorkflowValidationError
from opentelemetry import trace

errors = []
for options in ({"payload_limit": -1}, {"log_payload_limit": -5}, {"payload_limit": True}):
    try:
        stepstream.configure_telemetry(directory="tel", **options)
    except WorkflowValidationError as exc:
        errors.append(str(exc))
print(json.dumps({
    "errors": errors,
    "configured": type(trace.get_tracer_provider()).__name__ != "ProxyTracerProvider",
}))
"""


def test_negative_payload_limits_are_refused_before_anything_is_set_up(tmp_path: Path) -> None:
    """payload_limit and log_payload_limit below 0 (or not whole numbers) raise a clear error."""
    proc = run_script(tmp_path, NEGATIVE_LIMIT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    template = (
        "configure_telemetry({}=...) must be a whole number of characters, 0 or more, or None; "
        "got {}"
    )
    assert result == {
        "errors": [
            template.format("payload_limit", -1),
            template.format("log_payload_limit", -5),
            template.format("payload_limit", True),
        ],
        "configured": False,
    }
    assert not (tmp_path / "tel").exists()
