"""Logging: stream_event and lifecycle lines, and correlation of the application's own lines."""

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from opentelemetry.sdk.trace import ReadableSpan
from structlog.typing import EventDict

from _helpers import HEX16
from _helpers import HEX32
from _helpers import SEED_STEPS
from _helpers import BigWriter
from _helpers import Failing
from _helpers import Flaky
from _helpers import ProgressEvent
from _helpers import Slow
from _helpers import drain
from _helpers import expected_stream
from _helpers import outcome
from _helpers import providers_of
from _helpers import run_seed
from _helpers import run_span_name
from _helpers import span_id
from _helpers import step_span_name
from _helpers import stream_span_events
from _helpers import trace_id
from stepstream import Context
from stepstream import Event
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import WorkflowCancelledError
from stepstream import WorkflowTimeoutError
from stepstream import step
from stepstream.telemetry import add_correlation
from stepstream.telemetry import attributes as attrs
from stepstream.testing import CapturedTelemetry

STREAM_KEYS = {
    "workflow",
    "run_id",
    "step",
    "attempt",
    "event_type",
    "seq",
    "payload",
    "trace_id",
    "span_id",
}
CORRELATION_KEYS = ("run_id", "workflow", "step", "trace_id", "span_id")


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Give each test structlog's defaults and no bound contextvars, and restore them after."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


# -- events and workflows ---------------------------------------------------------------


class AsyncUserLog(Workflow):
    """An async step logs through structlog and through stdlib logging."""

    @step
    async def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        structlog.get_logger("userapp").info("user_line", answer=42)
        logging.getLogger("userapp.stdlib").warning("stdlib_line")
        return StopEvent(result="ok")


class SyncUserLog(Workflow):
    """A plain-def step (in a worker thread) logs and writes three events."""

    @step
    def work(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        structlog.get_logger("userapp").info("user_line", answer=42)
        logging.getLogger("userapp.stdlib").warning("stdlib_line")
        for i in range(3):
            ctx.write_event_to_stream(ProgressEvent(msg=str(i)))
        return StopEvent(result="ok")


#: A step logging from the event loop, and one logging from its worker thread.
USER_LOGGERS = [
    pytest.param(AsyncUserLog, id="async-step"),
    pytest.param(SyncUserLog, id="sync-step-in-thread"),
]


# -- helpers ----------------------------------------------------------------------------


def lines(captured: list[EventDict], message: str) -> list[EventDict]:
    """The captured lines whose message is ``message``."""
    return [line for line in captured if line["event"] == message]


def ids(span: ReadableSpan) -> tuple[str, str]:
    """The (trace_id, span_id) of ``span`` as the log lines spell them."""
    return format(trace_id(span), "032x"), format(span_id(span), "016x")


def line_ids(line: EventDict) -> tuple[str, str]:
    """The (trace_id, span_id) of a log line, checked to be lowercase hex of the right length."""
    assert re.fullmatch(HEX32, line["trace_id"]), line
    assert re.fullmatch(HEX16, line["span_id"]), line
    return line["trace_id"], line["span_id"]


async def logged_seed(sdk: CapturedTelemetry) -> tuple[str, list[Event], list[EventDict]]:
    """Run the seed workflow under capture_logs; return run id, stream and captured lines."""
    with structlog.testing.capture_logs() as captured:
        run_id, events = await run_seed(**providers_of(sdk))
    return run_id, events, captured


# -- stream_event lines -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_one_stream_event_line_per_streamed_event(sdk: CapturedTelemetry) -> None:
    """Every streamed event, the terminal one included, gets one stream_event line in order."""
    run_id, events, captured = await logged_seed(sdk)
    streamed = lines(captured, "stream_event")
    assert streamed == lines(captured, attrs.LOG_STREAM_EVENT)
    got = [(line["event_type"], line["seq"], line["payload"]) for line in streamed]
    assert got == expected_stream(events)
    for line in streamed:
        assert line["workflow"] == "MyWorkflow"
        assert line["run_id"] == run_id
        assert line["log_level"] == "info"
        assert line["logger"] == "stepstream"


@pytest.mark.asyncio
async def test_stream_event_lines_name_the_writing_step_and_its_span(
    sdk: CapturedTelemetry,
) -> None:
    """A stream_event line carries the writing step, attempt, and that step span's ids."""
    _, events, captured = await logged_seed(sdk)
    by_seq = {line["seq"]: line for line in lines(captured, "stream_event")}
    seq = 0
    for name in SEED_STEPS:
        span = sdk.one(step_span_name(name))
        streamed = (span.attributes or {})[attrs.EVENTS_STREAMED]
        assert isinstance(streamed, int)
        for _ in range(streamed):
            line = by_seq[seq]
            assert line["step"] == name
            assert line["attempt"] == 1
            assert line_ids(line) == ids(span)
            seq += 1
    assert seq == len(events) - 1
    terminal = by_seq[seq]
    assert terminal["event_type"] == "StopEvent"
    assert line_ids(terminal) == ids(sdk.one(run_span_name("MyWorkflow")))


@pytest.mark.asyncio
async def test_every_stream_event_line_has_every_contract_key(sdk: CapturedTelemetry) -> None:
    """Every stream_event line has all the contract keys; the terminal one names the ending step."""
    _, events, captured = await logged_seed(sdk)
    streamed = lines(captured, "stream_event")
    assert len(streamed) == len(events)
    for line in streamed:
        missing = STREAM_KEYS - set(line)
        assert not missing, f"seq {line.get('seq')} ({line.get('event_type')}) lacks {missing}"
    terminal = streamed[-1]
    assert (terminal["event_type"], terminal["step"], terminal["attempt"]) == (
        "StopEvent",
        "step_three",
        1,
    )


@pytest.mark.asyncio
async def test_stream_event_lines_of_a_sync_step_carry_its_span(sdk: CapturedTelemetry) -> None:
    """Events written from a plain-def step's worker thread are logged with that step's span."""
    with structlog.testing.capture_logs() as captured:
        handler = SyncUserLog(timeout=5, **providers_of(sdk)).run()
        events = await drain(handler)
        await handler
    streamed = lines(captured, "stream_event")
    got = [(line["event_type"], line["seq"], line["payload"]) for line in streamed]
    assert got == expected_stream(events)
    span = sdk.one(step_span_name("work"))
    for line in streamed[:-1]:
        assert line["step"] == "work"
        assert line_ids(line) == ids(span)


@pytest.mark.asyncio
async def test_stream_event_line_keeps_the_whole_payload(sdk: CapturedTelemetry) -> None:
    """Logs are the complete record: a payload the span event cuts at 4096 is whole in the line."""
    with structlog.testing.capture_logs() as captured:
        handler = BigWriter(timeout=5, **providers_of(sdk)).run(size=5000)
        events = await drain(handler)
    full = events[0].model_dump_json()
    assert len(full) > 4096
    assert lines(captured, "stream_event")[0]["payload"] == full
    span_payload = stream_span_events(sdk.one(step_span_name("work")))[0][attrs.EVENT_PAYLOAD]
    assert span_payload == full[:4096] + f"...[truncated {len(full) - 4096} chars]"


# -- lifecycle lines --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_and_step_lifecycle_lines_carry_correlation_keys(sdk: CapturedTelemetry) -> None:
    """run_started/run_finished and step_started/step_finished carry the run's and steps' ids."""
    run_id, _, captured = await logged_seed(sdk)
    run_ids = ids(sdk.one(run_span_name("MyWorkflow")))
    messages = [line["event"] for line in captured]
    assert messages[0] == "run_started"
    assert messages[-1] == "run_finished"
    for message in ("run_started", "run_finished"):
        (line,) = lines(captured, message)
        assert line["workflow"] == "MyWorkflow"
        assert line["run_id"] == run_id
        assert line_ids(line) == run_ids
    finished = lines(captured, attrs.LOG_RUN_FINISHED)[0]
    assert finished["status"] == "ok"
    assert isinstance(finished["duration_ms"], float | int)
    assert finished["duration_ms"] >= 0
    for message in ("step_started", "step_finished"):
        found = lines(captured, message)
        assert [line["step"] for line in found] == list(SEED_STEPS)
        for line in found:
            span = sdk.one(step_span_name(line["step"]))
            assert line["workflow"] == "MyWorkflow"
            assert line["run_id"] == run_id
            assert line["attempt"] == 1
            assert line_ids(line) == ids(span)
    for line in lines(captured, attrs.LOG_STEP_FINISHED):
        assert line["status"] == "ok"
        assert line["duration_ms"] >= 0


@pytest.mark.asyncio
async def test_retried_step_logs_failure_retry_and_second_attempt(sdk: CapturedTelemetry) -> None:
    """A retried step logs step_failed and step_retry for attempt 1, then attempt 2's lines."""
    with structlog.testing.capture_logs() as captured:
        handler = Flaky(timeout=5, **providers_of(sdk)).run()
        assert await handler == 2
    first, second = sdk.named(step_span_name("flaky"))
    flaky = [
        line for line in captured if line.get("step") == "flaky" and line["event"] != "stream_event"
    ]
    assert [(line["event"], line["attempt"]) for line in flaky] == [
        ("step_started", 1),
        ("step_failed", 1),
        ("step_retry", 1),
        ("step_started", 2),
        ("step_finished", 2),
    ]
    for line in flaky:
        assert line["run_id"] == handler.run_id
        assert line["workflow"] == "Flaky"
        assert line_ids(line) == ids(first if line["attempt"] == 1 else second)
    failed = lines(captured, attrs.LOG_STEP_FAILED)[0]
    assert failed["error_type"] == "ConnectionError"
    assert failed["status"] == "error"
    retry = lines(captured, attrs.LOG_STEP_RETRY)[0]
    assert retry["delay_s"] == 0
    assert lines(captured, "run_finished")[0]["status"] == "ok"


@pytest.mark.asyncio
async def test_failed_run_logs_step_failed_and_run_finished_error(sdk: CapturedTelemetry) -> None:
    """A step that raises logs step_failed at error level and run_finished with status error."""
    with structlog.testing.capture_logs() as captured:
        handler = Failing(timeout=5, **providers_of(sdk)).run()
        await drain(handler)
        assert isinstance(await outcome(handler), ValueError)
    (failed,) = lines(captured, "step_failed")
    assert failed["step"] == "explode"
    assert failed["attempt"] == 1
    assert failed["error_type"] == "ValueError"
    assert failed["log_level"] == "error"
    assert line_ids(failed) == ids(sdk.one(step_span_name("explode")))
    terminal = lines(captured, "stream_event")[-1]
    assert (terminal["event_type"], terminal["step"]) == ("WorkflowFailedEvent", "explode")
    (finished,) = lines(captured, "run_finished")
    assert finished["status"] == "error"
    assert finished["error_type"] == "ValueError"
    assert finished["run_id"] == handler.run_id
    assert finished["log_level"] == "error"
    assert line_ids(finished) == ids(sdk.one(run_span_name("Failing")))


@pytest.mark.parametrize(
    ("timeout", "cancel", "status", "error"),
    [
        pytest.param(0.1, False, "timeout", WorkflowTimeoutError, id="timeout"),
        pytest.param(5, True, "cancelled", WorkflowCancelledError, id="cancelled"),
    ],
)
@pytest.mark.asyncio
async def test_run_finished_reports_timeout_and_cancellation(
    sdk: CapturedTelemetry, timeout: float, cancel: bool, status: str, error: type[Exception]
) -> None:
    """run_finished carries status timeout or cancelled, with duration_ms."""
    with structlog.testing.capture_logs() as captured:
        handler = Slow(timeout=timeout, **providers_of(sdk)).run()
        async with asyncio.timeout(2):
            async for ev in handler.stream_events():
                if cancel and isinstance(ev, ProgressEvent):
                    await handler.cancel_run()
        assert isinstance(await outcome(handler), error)
    (finished,) = lines(captured, "run_finished")
    assert finished["status"] == status
    assert finished["duration_ms"] >= 0
    assert finished["run_id"] == handler.run_id
    (step_failed,) = lines(captured, "step_failed")
    assert step_failed["step"] == "dawdle"
    assert step_failed["status"] == "cancelled"


# -- the application's own lines ----------------------------------------------------------


@pytest.mark.parametrize("workflow", USER_LOGGERS)
@pytest.mark.asyncio
async def test_user_structlog_line_in_a_step_carries_correlation_keys(
    sdk: CapturedTelemetry, workflow: type[Workflow]
) -> None:
    """A structlog line the application emits inside a step gets the run and step span ids."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as captured:
        handler = workflow(timeout=5, **providers_of(sdk)).run()
        await drain(handler)
        assert await handler == "ok"
        structlog.get_logger("userapp").info("caller_line")
    (user,) = lines(captured, "user_line")
    assert user["answer"] == 42
    assert user["run_id"] == handler.run_id
    assert user["workflow"] == workflow.__name__
    assert user["step"] == "work"
    assert line_ids(user) == ids(sdk.one(step_span_name("work")))
    (caller,) = lines(captured, "caller_line")
    assert not set(CORRELATION_KEYS) & set(caller)


@pytest.mark.parametrize("workflow", USER_LOGGERS)
@pytest.mark.asyncio
async def test_stdlib_line_through_processor_formatter_carries_correlation_keys(
    sdk: CapturedTelemetry, workflow: type[Workflow]
) -> None:
    """A stdlib logging line inside a step, formatted with add_correlation, carries the ids."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[add_correlation],
        )
    )
    logger = logging.getLogger("userapp.stdlib")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        run = workflow(timeout=5, **providers_of(sdk)).run()
        await drain(run)
        assert await run == "ok"
        logger.warning("caller_line")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    rendered = [json.loads(text) for text in stream.getvalue().splitlines()]
    user, caller = rendered
    assert user["event"] == "stdlib_line"
    assert user["run_id"] == run.run_id
    assert user["workflow"] == workflow.__name__
    assert user["step"] == "work"
    assert line_ids(user) == ids(sdk.one(step_span_name("work")))
    assert caller["event"] == "caller_line"
    assert not set(CORRELATION_KEYS) & set(caller)


def test_add_correlation_outside_a_step_leaves_the_line_alone() -> None:
    """add_correlation adds nothing to a line emitted outside any step."""
    line: dict[str, Any] = {"event": "hello", "run_id": "mine"}
    assert add_correlation(None, "info", dict(line)) == line
