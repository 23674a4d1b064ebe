"""The ``stepstream`` command line, driven through subprocesses and a real terminal (tmux).

Golden files live in tests/golden/; regenerate them after an intended output change with
``STEPSTREAM_UPDATE_GOLDEN=1 pytest tests/test_cli.py`` and review the diff.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import IO
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "streaming.py"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = bool(os.environ.get("STEPSTREAM_UPDATE_GOLDEN"))

HEX32 = r"[0-9a-f]{32}"
IDS_LINE = re.compile(
    rf"^run_id (?P<run_id>{HEX32})  trace_id (?P<trace_id>{HEX32})$", re.MULTILINE
)
EVENT_LINE = re.compile(r"^ *\d+\.\d{3}s (?P<step>\S+) +(?P<event>.*)$")

# -- workflow files the tests write into their temporary directories ---------------------

FAST = """
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class JobStart(StartEvent):
    topic: str
    count: int = 3
    tags: list[str] = []


class Prepared(Event):
    topic: str
    count: int
    tags: list[str]


class Tick(Event):
    msg: str


class Fast(Workflow):
    @step
    async def prepare(self, ctx: Context, ev: JobStart) -> Prepared:
        return Prepared(topic=ev.topic, count=ev.count, tags=ev.tags)

    @step
    async def work(self, ctx: Context, ev: Prepared) -> StopEvent:
        for i in range(ev.count):
            ctx.write_event_to_stream(Tick(msg=f"{ev.topic} part {i}"))
        return StopEvent(result=f"{ev.topic} x{ev.count} tags={ev.tags}")
"""

BOOM = """
from stepstream import Context, StartEvent, StopEvent, Workflow, step


class Boom(Workflow):
    @step
    async def explode(self, ctx: Context, ev: StartEvent) -> StopEvent:
        raise ValueError("kaboom in explode")
"""

SLOW = """
import asyncio

from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step


class Tick(Event):
    msg: str


class Slow(Workflow):
    @step
    async def crawl(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Tick(msg="crawl started"))
        await asyncio.sleep(30)
        return StopEvent(result="never")
"""

ASK = """
from stepstream import (
    Context, HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent, Workflow, step,
)


class Ask(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        answer = await ctx.wait_for_event(
            HumanResponseEvent, waiter_event=InputRequiredEvent(prefix="Name? ")
        )
        return StopEvent(result=f"hello {answer.response}")
"""

TWO = """
from stepstream import Context, StartEvent, StopEvent, Workflow, step


class Alpha(Workflow):
    @step
    async def a(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="from alpha")


class Beta(Workflow):
    @step
    async def b(self, ctx: Context, ev: StartEvent) -> StopEvent:
        return StopEvent(result="from beta")
"""

FLAKY = """
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
from stepstream.retry_policy import retry_policy, stop_after_attempt, wait_fixed


class Note(Event):
    msg: str


class Flaky(Workflow):
    @step(retry_policy=retry_policy(wait=wait_fixed(0.8), stop=stop_after_attempt(2)))
    async def flaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        ctx.write_event_to_stream(Note(msg="trying"))
        raise ValueError("flaky failure")
"""

SYNTAX_ERROR = """
from stepstream import Workflow

class Broken(Workflow:
    pass
"""

NO_WORKFLOW = """
from stepstream import Event


class NotAWorkflow(Event):
    msg: str
"""

SOURCES = {
    "fast.py": FAST,
    "boom.py": BOOM,
    "slow.py": SLOW,
    "ask.py": ASK,
    "two.py": TWO,
    "flaky.py": FLAKY,
    "syntax_error.py": SYNTAX_ERROR,
    "no_workflow.py": NO_WORKFLOW,
}


def write_workflows(directory: Path) -> None:
    """Write every test workflow file into ``directory``."""
    for name, source in SOURCES.items():
        (directory / name).write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")


# -- running the command -----------------------------------------------------------------


def cli_env() -> dict[str, str]:
    """The environment of every child: no OTLP settings, no forced colour, fixed width."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "FORCE_COLOR", "TTY_", "TMUX", "COLUMNS", "LINES"))
    }
    env.update(COLUMNS="120", LINES="40", PYTHONUTF8="1")
    return env


def stepstream(
    *args: str, cwd: Path, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m stepstream ARGS`` in ``cwd`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "stepstream", *args],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        env=cli_env(),
        check=False,
    )


def popen(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """Start ``python -m stepstream ARGS`` in ``cwd`` with piped output."""
    return subprocess.Popen(
        [sys.executable, "-m", "stepstream", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=cli_env(),
    )


class LineReader:
    """Reads a stream's lines on a thread, so that waiting for one is bounded."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 15) -> str:
        """Return the first unread line matching ``predicate``; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"output ended before the awaited line; read {self.seen!r}")
            self.seen.append(line)
            if predicate(line):
                return line
        pytest.fail(f"no awaited line within {timeout}s; read {self.seen!r}")

    def rest(self, timeout: float = 15) -> str:
        """Return every line not yet read, once the stream has closed."""
        self._thread.join(timeout)
        lines: list[str] = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                lines.append(line)
        self.seen.extend(lines)
        return "".join(lines)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill ``proc`` if it is still running and reap it."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=15)


# -- reading what a run recorded ---------------------------------------------------------


def _attr_value(value: dict[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        return int(value["intValue"])
    return value


def read_spans(directory: Path) -> list[dict[str, Any]]:
    """Every span in ``directory/traces.jsonl`` (OTLP/JSON), attributes flattened."""
    spans: list[dict[str, Any]] = []
    for line in (directory / "traces.jsonl").read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for raw in scope["spans"]:
                    flat = {a["key"]: _attr_value(a["value"]) for a in raw.get("attributes", [])}
                    spans.append({**raw, "attributes": flat})
    return spans


def read_logs(directory: Path) -> list[dict[str, Any]]:
    """Every JSON object in ``directory/logs.jsonl``."""
    lines = (directory / "logs.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def flat(text: str) -> str:
    """``text`` with its line wrapping undone (rich wraps long messages at the width)."""
    return " ".join(text.split())


def ids_of(output: str) -> tuple[str, str]:
    """The run_id and trace_id a run printed."""
    match = IDS_LINE.search(output)
    assert match is not None, f"no 'run_id ... trace_id ...' line in:\n{output}"
    return match["run_id"], match["trace_id"]


# -- golden files ------------------------------------------------------------------------

_NORMALISE: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b[0-9a-f]{32}\b"), "<ID32>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<ID16>"),
    (re.compile(r"\b[0-9a-f]{12}\b"), "<ID12>"),
    (re.compile(r"\brun=[0-9a-f]{8}\b"), "run=<ID8>"),
    (re.compile(r"\b\d\d-\d\d \d\d:\d\d:\d\d\b"), "<START>"),
    (re.compile(r"\b\d\d:\d\d:\d\d\.\d{3}\b"), "<TIME>"),
    (re.compile(r"\d[\d,]*\.\d+ ms\b"), "<MS>"),
    (re.compile(r"\b(duration_ms)=[\d.]+"), r"\1=<N>"),
    # WorkflowFailedEvent payloads carry the failed step's time since its first attempt.
    (re.compile(r'("elapsed_seconds":)[\d.e+-]+'), r"\1<N>"),
    # Column widths follow the normalised values: collapse padding and rules.
    (re.compile(r"█+"), "█"),
    (re.compile(r"([━─ ])\1+"), r"\1"),
]


def normalise(text: str) -> str:
    """Replace ids, times and durations with placeholders and collapse column padding.

    Leading spaces (the waterfall's tree indentation) are kept.
    """
    lines = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        for pattern, replacement in _NORMALISE:
            body = pattern.sub(replacement, body)
        lines.append((line[: len(line) - len(line.lstrip(" "))] + body).rstrip())
    return "\n".join(lines) + "\n"


def assert_golden(name: str, actual: str) -> None:
    """Compare ``actual`` with tests/golden/``name``, failing with a unified diff."""
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    expected = path.read_text(encoding="utf-8") if path.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"tests/golden/{name}",
                "actual output (normalised)",
            )
        )
        pytest.fail(
            f"output differs from tests/golden/{name} "
            f"(STEPSTREAM_UPDATE_GOLDEN=1 accepts it):\n{diff}",
            pytrace=False,
        )


# -- shared recorded runs ----------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """A directory with four runs recorded in order: error, timeout, cancelled, ok."""

    cwd: Path
    boom: subprocess.CompletedProcess[str]
    timeout: subprocess.CompletedProcess[str]
    cancelled: subprocess.CompletedProcess[str]
    fast: subprocess.CompletedProcess[str]

    @property
    def telemetry(self) -> Path:
        """The default embedded telemetry directory."""
        return self.cwd / ".stepstream"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the command in the recorded directory."""
        return stepstream(*args, cwd=self.cwd, stdin=stdin)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """Record a failing, a timed-out, a cancelled and a successful run in one directory."""
    cwd = tmp_path_factory.mktemp("recorded")
    write_workflows(cwd)
    return Recorded(
        cwd=cwd,
        boom=stepstream("run", "boom.py", cwd=cwd),
        timeout=stepstream("run", "slow.py", "--timeout", "0.2", cwd=cwd),
        cancelled=stepstream("run", "ask.py", cwd=cwd, stdin=""),
        fast=stepstream("run", "fast.py", "--input", "topic=whales", cwd=cwd),
    )


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A temporary directory holding the test workflow files."""
    write_workflows(tmp_path)
    return tmp_path


# -- stepstream run: plain mode ----------------------------------------------------------


def test_run_plain_prints_one_line_per_event_then_result_and_ids(recorded: Recorded) -> None:
    """Without a terminal, a run prints one line per streamed event, the result and the ids."""
    proc = recorded.fast
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 6, proc.stdout
    events = [EVENT_LINE.match(line) for line in lines[:4]]
    assert all(events), proc.stdout
    assert [(m["step"], m["event"]) for m in events if m] == [
        ("work", "Tick msg='whales part 0'"),
        ("work", "Tick msg='whales part 1'"),
        ("work", "Tick msg='whales part 2'"),
        ("-", "StopEvent result='whales x3 tags=[]'"),
    ]
    assert lines[4] == "Result: whales x3 tags=[]"
    assert IDS_LINE.fullmatch(lines[5]), lines[5]


def test_run_writes_embedded_telemetry_under_dot_stepstream(recorded: Recorded) -> None:
    """With no OTLP endpoint, the run's spans and log lines land in ./.stepstream."""
    run_id, trace_id = ids_of(recorded.fast.stdout)
    assert (recorded.telemetry / "traces.jsonl").is_file()
    assert (recorded.telemetry / "logs.jsonl").is_file()
    assert "telemetry: .stepstream" in recorded.fast.stderr
    run_spans = [
        s
        for s in read_spans(recorded.telemetry)
        if s["attributes"].get("stepstream.run_id") == run_id
    ]
    assert {s["name"] for s in run_spans} == {
        "invoke_workflow Fast",
        "run_step prepare",
        "run_step work",
    }
    assert {s["traceId"] for s in run_spans} == {trace_id}
    streamed = [
        line
        for line in read_logs(recorded.telemetry)
        if line.get("run_id") == run_id and line["event"] == "stream_event"
    ]
    assert [line["event_type"] for line in streamed] == ["Tick", "Tick", "Tick", "StopEvent"]


def test_run_honours_telemetry_dir(work: Path) -> None:
    """--telemetry-dir sends the embedded files to the given directory, not ./.stepstream."""
    proc = stepstream(
        "run", "fast.py", "--input", "topic=x", "--telemetry-dir", "nested/tele", cwd=work
    )
    assert proc.returncode == 0, proc.stderr
    run_id, _ = ids_of(proc.stdout)
    assert not (work / ".stepstream").exists()
    spans = read_spans(work / "nested" / "tele")
    assert any(s["attributes"].get("stepstream.run_id") == run_id for s in spans)
    assert (work / "nested" / "tele" / "logs.jsonl").is_file()


def test_run_input_pairs_are_json_parsed_into_the_start_event(work: Path) -> None:
    """--input key=value parses JSON values (a list here) and keeps other text as strings."""
    proc = stepstream(
        "run",
        "fast.py",
        "--input",
        "topic=whales",
        "--input",
        "count=2",
        "--input",
        'tags=["a", "b"]',
        cwd=work,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Result: whales x2 tags=['a', 'b']" in proc.stdout.splitlines()
    assert proc.stdout.count("Tick msg=") == 2


def test_run_input_json_reaches_the_start_event(work: Path) -> None:
    """--input-json gives the start event its fields as one JSON object."""
    proc = stepstream(
        "run", "fast.py", "--input-json", '{"topic": "json", "count": 1, "tags": ["t"]}', cwd=work
    )
    assert proc.returncode == 0, proc.stderr
    assert "Result: json x1 tags=['t']" in proc.stdout.splitlines()


def test_run_file_colon_class_selects_one_of_several_workflows(work: Path) -> None:
    """FILE.py:Class runs the named workflow when the file defines several."""
    proc = stepstream("run", "two.py:Beta", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "Result: from beta" in proc.stdout.splitlines()


def test_run_streaming_example_plain(tmp_path: Path) -> None:
    """The streaming example runs to completion in plain mode, one line per streamed event."""
    proc = stepstream("run", str(EXAMPLE), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-2] == "Result: Workflow complete."
    run_id, _ = ids_of(lines[-1])
    events = [m for m in map(EVENT_LINE.match, lines[:-2]) if m]
    assert len(events) == len(lines) - 2
    assert events[0]["step"] == "step_one"
    assert events[0]["event"] == "ProgressEvent msg='Step one is happening'"
    assert [m["event"] for m in events[1:4]] == [
        "ProgressEvent msg='Call '",
        "ProgressEvent msg='me '",
        "ProgressEvent msg='Ishmael. '",
    ]
    assert (events[-2]["step"], events[-2]["event"]) == (
        "step_three",
        "ProgressEvent msg='Step three is happening'",
    )
    assert (events[-1]["step"], events[-1]["event"]) == (
        "-",
        "StopEvent result='Workflow complete.'",
    )
    logged = [
        line
        for line in read_logs(tmp_path / ".stepstream")
        if line.get("run_id") == run_id and line["event"] == "stream_event"
    ]
    assert len(logged) == len(events)


def test_run_human_in_the_loop_reads_the_answer_from_stdin(work: Path) -> None:
    """An InputRequiredEvent prompts with its prefix and the stdin line answers it."""
    proc = stepstream("run", "ask.py", cwd=work, stdin="Ada\n")
    assert proc.returncode == 0, proc.stderr
    assert "Name?" in proc.stdout
    assert "Result: hello Ada" in proc.stdout.splitlines()


# -- stepstream run: exit codes ----------------------------------------------------------


def test_run_failing_step_exits_1_naming_the_exception(recorded: Recorded) -> None:
    """A step that raises ends the command with exit code 1 and the exception on stderr."""
    proc = recorded.boom
    assert proc.returncode == 1
    assert "ValueError: kaboom in explode" in flat(proc.stderr)
    ids_of(proc.stderr)
    assert "WorkflowFailedEvent" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_run_timeout_exits_124(recorded: Recorded) -> None:
    """--timeout ends a run whose step is too slow with exit code 124."""
    proc = recorded.timeout
    assert proc.returncode == 124
    assert "WorkflowTimeoutError" in flat(proc.stderr)
    assert "timed out after 0.2s" in flat(proc.stderr)
    assert "crawl" in flat(proc.stderr)


def test_run_human_in_the_loop_without_an_answer_cancels(recorded: Recorded) -> None:
    """An input request with stdin at end of file cancels the run (exit 130)."""
    proc = recorded.cancelled
    assert proc.returncode == 130
    assert "no answer on standard input" in proc.stdout
    assert "WorkflowCancelledError" in flat(proc.stderr)


@dataclass(frozen=True)
class Interrupted:
    """A run stopped with SIGINT after its first event line."""

    cwd: Path
    returncode: int
    first_line: str
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    """Start slow.py, wait for its first event line, then send SIGINT as Ctrl-C would."""
    cwd = tmp_path_factory.mktemp("interrupted")
    write_workflows(cwd)
    with popen("run", "slow.py", cwd=cwd) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            reader = LineReader(proc.stdout)
            first = reader.wait_for(lambda line: "Tick msg='crawl started'" in line)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=15)
            stderr = proc.stderr.read()
            reader.rest()
        finally:
            stop(proc)
    return Interrupted(cwd, code, first, "".join(reader.seen), stderr)


def test_run_ctrl_c_exits_130_and_ends_every_span(interrupted: Interrupted) -> None:
    """SIGINT cancels the run: exit code 130, run span 'cancelled', every started span ended."""
    assert interrupted.returncode == 130, interrupted.stderr
    assert "interrupted" in flat(interrupted.stderr)
    assert "Result:" not in interrupted.stdout
    telemetry = interrupted.cwd / ".stepstream"
    spans = {s["spanId"]: s for s in read_spans(telemetry)}
    runs = [s for s in spans.values() if s["name"] == "invoke_workflow Slow"]
    assert len(runs) == 1
    assert runs[0]["attributes"]["stepstream.run.status"] == "cancelled"
    steps = [s for s in spans.values() if s["name"] == "run_step crawl"]
    assert len(steps) == 1
    assert steps[0]["attributes"]["stepstream.step.status"] == "cancelled"
    started = [
        line["span_id"]
        for line in read_logs(telemetry)
        if line["event"] in {"run_started", "step_started"}
    ]
    assert len(started) == 2
    for span_id in started:
        assert span_id in spans, f"span {span_id} started but was never ended/exported"
        span = spans[span_id]
        assert int(span["endTimeUnixNano"]) >= int(span["startTimeUnixNano"]) > 0


def test_run_ctrl_c_reports_cleanly_without_a_traceback(interrupted: Interrupted) -> None:
    """Ctrl-C leaves one clear 'interrupted' message on stderr and no Python traceback."""
    assert "interrupted: the run was cancelled" in flat(interrupted.stderr)
    assert "Traceback" not in interrupted.stderr, interrupted.stderr
    assert "never retrieved" not in interrupted.stderr, interrupted.stderr


# -- error messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "missing.py"), "cannot read missing.py: no such file"),
        (("run", "syntax_error.py"), "cannot import syntax_error.py: syntax error at line 3"),
        (("run", "no_workflow.py"), "no_workflow.py defines no Workflow subclass"),
        (("run", "two.py"), "two.py defines several workflows (Alpha, Beta)"),
        (("run", "fast.py:Missing"), "fast.py has no Workflow class 'Missing'"),
        (("run", "fast.py", "--input-json", "{bad"), "--input-json is not valid JSON"),
        (("run", "fast.py", "--input-json", "[1]"), "--input-json must be a JSON object"),
        (("run", "fast.py", "--input", "novalue"), "--input 'novalue' is not key=value"),
        (("draw", "missing.py", "--mermaid"), "cannot read missing.py: no such file"),
        (("draw", "two.py", "--mermaid"), "two.py defines several workflows (Alpha, Beta)"),
    ],
    ids=[
        "missing-file",
        "syntax-error",
        "no-workflow",
        "ambiguous",
        "missing-class",
        "bad-input-json",
        "input-json-not-object",
        "input-not-key-value",
        "draw-missing-file",
        "draw-ambiguous",
    ],
)
def test_load_and_input_errors_give_one_clear_message(
    work: Path, args: tuple[str, ...], message: str
) -> None:
    """Each unreadable file, missing or ambiguous class and bad input gives one error line."""
    proc = stepstream(*args, cwd=work)
    assert proc.returncode != 0
    assert f"error: {message}" in flat(proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_input_failing_start_event_validation_names_the_field(work: Path) -> None:
    """An --input the custom StartEvent rejects names the field and exits non-zero."""
    proc = stepstream("run", "fast.py", "--input", "topic=x", "--input", "count=many", cwd=work)
    assert proc.returncode != 0
    assert "error: Fast.run(): the arguments do not fit JobStart" in flat(proc.stderr)
    assert "field 'count'" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr


def test_missing_required_start_event_field_is_named(work: Path) -> None:
    """A run without a required StartEvent field names the missing field and exits non-zero."""
    proc = stepstream("run", "fast.py", cwd=work)
    assert proc.returncode != 0
    assert "field 'topic': Field required" in flat(proc.stderr)


def test_traces_show_unknown_id_is_an_error(recorded: Recorded) -> None:
    """`traces show` of an id no run has names the id and exits non-zero."""
    proc = recorded.cli("traces", "show", "ffffeeee")
    assert proc.returncode != 0
    assert "error: no run with run_id or trace_id 'ffffeeee'" in flat(proc.stderr)


@pytest.mark.parametrize(
    "args", [("traces", "list"), ("traces", "show", "last"), ("logs",)], ids=" ".join
)
def test_commands_without_a_telemetry_directory_are_an_error(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Reading telemetry where none was recorded says so and exits non-zero."""
    proc = stepstream(*args, cwd=tmp_path)
    assert proc.returncode != 0
    assert "error: no telemetry directory at .stepstream" in flat(proc.stderr)
    assert "Traceback" not in proc.stderr


@pytest.fixture
def damaged(recorded: Recorded, tmp_path: Path) -> Path:
    """A copy of the recorded telemetry with damaged lines appended to both files."""
    copy = tmp_path / "tele"
    shutil.copytree(recorded.telemetry, copy)
    for name, extra in (
        ("traces.jsonl", '{"resourceSpans": [oops\n[1, 2]\n'),
        ("logs.jsonl", 'not json at all\n["a", "list"]\n'),
    ):
        with (copy / name).open("a", encoding="utf-8") as handle:
            handle.write(extra)
    return copy


def _line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_traces_list_skips_an_invalid_json_line_with_a_warning(damaged: Path) -> None:
    """A traces.jsonl line that is not JSON is skipped with a file:line warning; listing works."""
    bad = _line_count(damaged / "traces.jsonl") - 1
    proc = stepstream("traces", "list", "--telemetry-dir", str(damaged), cwd=damaged.parent)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {damaged / 'traces.jsonl'}:{bad}: damaged line skipped" in flat(proc.stderr)
    assert all(name in proc.stdout for name in ("Fast", "Ask", "Slow", "Boom"))


def test_traces_list_skips_a_non_batch_json_line_with_its_line_number(damaged: Path) -> None:
    """A JSON traces.jsonl line that is no span batch is skipped, the warning naming its line."""
    bad = _line_count(damaged / "traces.jsonl")
    proc = stepstream("traces", "list", "--telemetry-dir", str(damaged), cwd=damaged.parent)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {damaged / 'traces.jsonl'}:{bad}: damaged line skipped" in flat(proc.stderr)


def test_traces_show_skips_damaged_lines(damaged: Path) -> None:
    """`traces show last` still shows the last run when traces.jsonl has damaged lines."""
    proc = stepstream("traces", "show", "last", "--telemetry-dir", str(damaged), cwd=damaged)
    assert proc.returncode == 0, proc.stderr
    assert "damaged line skipped" in flat(proc.stderr)
    assert "invoke_workflow Fast" in proc.stdout


def test_logs_skips_an_invalid_json_line_with_a_warning(damaged: Path) -> None:
    """A logs.jsonl line that is not JSON is skipped with a file:line warning; the rest print."""
    bad = _line_count(damaged / "logs.jsonl") - 1
    proc = stepstream("logs", "--telemetry-dir", str(damaged), cwd=damaged)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {damaged / 'logs.jsonl'}:{bad}: damaged line skipped" in flat(proc.stderr)
    assert proc.stdout.count("run_finished") == 4


def test_logs_skips_a_non_object_json_line_with_its_line_number(damaged: Path) -> None:
    """A logs.jsonl line that is JSON but no object is skipped, the warning naming file:line."""
    bad = _line_count(damaged / "logs.jsonl")
    proc = stepstream("logs", "--telemetry-dir", str(damaged), cwd=damaged)
    assert proc.returncode == 0, proc.stderr
    assert f"warning: {damaged / 'logs.jsonl'}:{bad}:" in flat(proc.stderr), proc.stderr


# -- traces list / show, logs: golden output and filters ---------------------------------


def _rows(table: str) -> list[list[str]]:
    """The body rows of a rich table as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in table.splitlines()
        if line.startswith("│")
    ]


def test_traces_list_golden(recorded: Recorded) -> None:
    """`traces list` shows every run, newest first, matching the golden table."""
    proc = recorded.cli("traces", "list")
    assert proc.returncode == 0, proc.stderr
    assert_golden("traces_list.txt", normalise(proc.stdout))


@pytest.mark.parametrize(
    ("args", "workflows"),
    [
        (("--workflow", "Fast"), ["Fast"]),
        (("--workflow", "Nope"), []),
        (("--status", "ok"), ["Fast"]),
        (("--status", "error"), ["Boom"]),
        (("--status", "timeout"), ["Slow"]),
        (("--status", "cancelled"), ["Ask"]),
        (("--limit", "2"), ["Fast", "Ask"]),
        (("--limit", "1", "--status", "timeout"), ["Slow"]),
    ],
    ids=" ".join,
)
def test_traces_list_filters(
    recorded: Recorded, args: tuple[str, ...], workflows: list[str]
) -> None:
    """--workflow, --status and --limit select the listed runs."""
    proc = recorded.cli("traces", "list", *args)
    assert proc.returncode == 0, proc.stderr
    assert [row[1] for row in _rows(proc.stdout)] == workflows


def test_traces_list_rejects_an_unknown_status(recorded: Recorded) -> None:
    """--status accepts only ok, error, timeout and cancelled."""
    proc = recorded.cli("traces", "list", "--status", "weird")
    assert proc.returncode != 0
    assert "weird" in flat(proc.stderr)


def test_traces_show_last_golden(recorded: Recorded) -> None:
    """`traces show last` draws the last run's waterfall, matching the golden output."""
    proc = recorded.cli("traces", "show", "last")
    assert proc.returncode == 0, proc.stderr
    run_id, trace_id = ids_of(recorded.fast.stdout)
    assert f"run_id {run_id}  trace_id {trace_id}" in proc.stdout
    assert_golden("traces_show_last.txt", normalise(proc.stdout))


def test_traces_show_by_run_id_or_trace_id_prefix(recorded: Recorded) -> None:
    """`traces show` finds a run by its run_id, its trace_id, or a prefix of either."""
    run_id, trace_id = ids_of(recorded.boom.stderr)
    for ref in (run_id, trace_id, run_id[:10]):
        proc = recorded.cli("traces", "show", ref)
        assert proc.returncode == 0, proc.stderr
        assert f"Boom  run_id {run_id}" in proc.stdout
        assert "✗ ValueError: kaboom in explode" in proc.stdout


def test_traces_show_events_and_attributes_options(recorded: Recorded) -> None:
    """--events N caps the listed span events, --events all lists them, --attributes shows all."""
    capped = recorded.cli("traces", "show", "last", "--events", "1")
    assert capped.returncode == 0, capped.stderr
    assert "#0 Tick" in capped.stdout
    assert "#2 Tick" not in capped.stdout
    assert "… 2 more events (--events all)" in capped.stdout
    full = recorded.cli("traces", "show", "last", "--events", "all")
    assert "#2 Tick" in full.stdout
    assert "more events" not in full.stdout
    attributes = recorded.cli("traces", "show", "last", "--attributes")
    assert "stepstream.step.attempt = 1" in attributes.stdout
    assert "stepstream.run.status = 'ok'" in attributes.stdout
    bad = recorded.cli("traces", "show", "last", "--events", "many")
    assert bad.returncode != 0
    assert "--events takes a number or 'all'" in flat(bad.stderr)


def test_traces_show_json(recorded: Recorded) -> None:
    """`traces show --json` prints the run's spans as JSON with the expected names."""
    run_id, trace_id = ids_of(recorded.fast.stdout)
    proc = recorded.cli("traces", "show", run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run_id"] == run_id
    assert data["workflow"] == "Fast"
    assert data["status"] == "ok"
    assert [s["name"] for s in data["spans"]] == [
        "invoke_workflow Fast",
        "run_step prepare",
        "run_step work",
    ]
    assert {s["trace_id"] for s in data["spans"]} == {trace_id}
    work_span = data["spans"][2]
    assert [e["attributes"]["stepstream.event.type"] for e in work_span["events"]] == ["Tick"] * 3


def test_logs_golden(recorded: Recorded) -> None:
    """`logs` prints every recorded line in order, matching the golden output."""
    proc = recorded.cli("logs")
    assert proc.returncode == 0, proc.stderr
    assert_golden("logs.txt", normalise(proc.stdout))


def test_logs_json_lines_parse(recorded: Recorded) -> None:
    """`logs --json` prints one JSON object per line, the same lines as the file."""
    proc = recorded.cli("logs", "--json")
    assert proc.returncode == 0, proc.stderr
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert printed == read_logs(recorded.telemetry)


def _logged(recorded: Recorded, *args: str) -> list[dict[str, Any]]:
    proc = recorded.cli("logs", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_logs_filters(recorded: Recorded) -> None:
    """--run-id (a prefix), --step, --event-type and --level keep only the matching lines."""
    everything = read_logs(recorded.telemetry)
    run_id, _ = ids_of(recorded.fast.stdout)
    by_run = _logged(recorded, "--run-id", run_id[:8])
    assert by_run == [line for line in everything if line["run_id"] == run_id]
    assert [line["event"] for line in by_run][:2] == ["run_started", "step_started"]
    by_step = _logged(recorded, "--step", "explode")
    assert by_step
    assert {line["step"] for line in by_step} == {"explode"}
    by_type = _logged(recorded, "--event-type", "Tick")
    assert len(by_type) == 4  # three from fast.py, one from slow.py
    assert {line["event_type"] for line in by_type} == {"Tick"}
    errors = _logged(recorded, "--level", "error")
    assert errors
    assert {line["level"] for line in errors} == {"error"}
    assert {line["workflow"] for line in errors if line["event"] == "run_finished"} == {
        "Boom",
        "Slow",
        "Ask",
    }
    combined = _logged(recorded, "--run-id", run_id, "--event-type", "Tick", "--step", "work")
    assert [json.loads(line["payload"])["msg"] for line in combined] == [
        "whales part 0",
        "whales part 1",
        "whales part 2",
    ]


def test_logs_since(recorded: Recorded, tmp_path: Path) -> None:
    """--since keeps only lines newer than the duration and rejects a malformed duration."""
    tele = tmp_path / "tele"
    tele.mkdir()
    now = datetime.now(UTC)
    lines = [
        {"timestamp": (now - timedelta(days=3)).isoformat(), "level": "info", "event": "old"},
        {"timestamp": (now - timedelta(hours=3)).isoformat(), "level": "info", "event": "hours"},
        {"timestamp": (now - timedelta(seconds=5)).isoformat(), "level": "info", "event": "new"},
    ]
    (tele / "logs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")

    def events(since: str) -> list[str]:
        proc = stepstream(
            "logs", "--json", "--since", since, "--telemetry-dir", "tele", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line)["event"] for line in proc.stdout.splitlines()]

    assert events("1m") == ["new"]
    assert events("4h") == ["hours", "new"]
    assert events("2d") == ["hours", "new"]
    assert events("7d") == ["old", "hours", "new"]
    assert len(_logged(recorded, "--since", "1h")) == len(read_logs(recorded.telemetry))
    bad = stepstream("logs", "--since", "yesterday", "--telemetry-dir", "tele", cwd=tmp_path)
    assert bad.returncode != 0
    assert "--since takes a duration like 30s, 10m, 2h or 1d, got 'yesterday'" in flat(bad.stderr)


def test_logs_follow_prints_lines_appended_after_it_started(tmp_path: Path) -> None:
    """`logs --follow` prints the existing lines, then each complete line appended later."""
    tele = tmp_path / "tele"
    tele.mkdir()
    logs = tele / "logs.jsonl"
    first = {"timestamp": datetime.now(UTC).isoformat(), "level": "info", "event": "before"}
    logs.write_text(json.dumps(first) + "\n", encoding="utf-8")
    with popen("logs", "--follow", "--telemetry-dir", "tele", cwd=tmp_path) as proc:
        try:
            assert proc.stdout is not None
            reader = LineReader(proc.stdout)
            reader.wait_for(lambda line: "before" in line)
            time.sleep(0.5)  # let it reach its follow loop
            later = {
                "timestamp": datetime.now(UTC).isoformat(),
                "level": "warning",
                "event": "appended_later",
                "workflow": "W",
                "step": "s",
                "run_id": "0123456789abcdef0123456789abcdef",
            }
            with logs.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(later) + "\n")
            line = reader.wait_for(lambda line: "appended_later" in line, timeout=10)
            assert "WARNING" in line
            assert "W/s run=01234567" in line
            # A line written in two parts is printed once, when it is complete.
            with logs.open("a", encoding="utf-8") as handle:
                handle.write('{"level": "info", "event": "split_')
                handle.flush()
                time.sleep(0.5)
                handle.write('line"}\n')
            reader.wait_for(lambda line: "split_line" in line, timeout=10)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
            reader.rest()
        finally:
            stop(proc)
    assert not any("split_" in line and "split_line" not in line for line in reader.seen)


# -- stepstream draw ---------------------------------------------------------------------


def test_draw_mermaid_golden(tmp_path: Path) -> None:
    """`draw --mermaid` prints the streaming example's flowchart, matching the golden file."""
    proc = stepstream("draw", str(EXAMPLE), "--mermaid", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_golden("draw_streaming.mmd", proc.stdout)


def test_draw_html_writes_a_file_with_the_step_names(tmp_path: Path) -> None:
    """`draw -o flow.html` writes an HTML page that names every step."""
    proc = stepstream("draw", f"{EXAMPLE}:MyWorkflow", "-o", "flow.html", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "flow.html").read_text(encoding="utf-8")
    assert "<html" in page.lower()
    for name in ("step_one", "step_two", "step_three"):
        assert name in page
    assert "wrote flow.html" in flat(proc.stderr)


@pytest.mark.parametrize("extra", [(), ("--mermaid", "-o", "flow.html")], ids=["neither", "both"])
def test_draw_needs_exactly_one_output(tmp_path: Path, extra: tuple[str, ...]) -> None:
    """Giving neither or both of -o and --mermaid is an error and writes nothing."""
    proc = stepstream("draw", str(EXAMPLE), *extra, cwd=tmp_path)
    assert proc.returncode != 0
    assert "error: give exactly one of -o FILE.html or --mermaid" in flat(proc.stderr)
    assert not (tmp_path / "flow.html").exists()


# -- the live view in a real terminal (tmux) ---------------------------------------------

SPINNER = "[\u2800-\u28ff]"  # rich's "dots" spinner frames are braille characters


SPINNER = "[\u2800-\u28ff]"  # rich's "dots" spinner frames are braille characters


@dataclass(frozen=True)
class Pane:
    """A tmux pane on a private tmux server, running one command."""

    name: str
    env: dict[str, str]

    def tmux(self, *args: str) -> str:
        """Run a tmux command against this pane's server and return its output."""
        return subprocess.run(
            ["tmux", "-L", self.name, *args],
            capture_output=True,
            text=True,
            encoding="utf-8",
            check=True,
            timeout=10,
            env=self.env,
        ).stdout

    def capture(self, escapes: bool = False) -> str:
        """The visible screen (with colour escapes if ``escapes``)."""
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.name)

    def send_keys(self, *keys: str) -> None:
        """Type ``keys`` (tmux key names such as Enter or C-c) into the pane."""
        self.tmux("send-keys", "-t", self.name, *keys)

    def poll(self, pattern: str, timeout: float = 20) -> str:
        """Capture until ``pattern`` (a multiline regex) shows; return that screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture()
            if re.search(pattern, screen, re.MULTILINE):
                return screen
            time.sleep(0.1)
        pytest.fail(f"{pattern!r} never showed within {timeout}s; last screen:\n{screen}")


@contextlib.contextmanager
def tmux_run(cwd: Path, args: str) -> Iterator[Pane]:
    """Run ``stepstream ARGS`` in a fresh 120x40 tmux pane; remove its tmux server after."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux): the live view needs a tty")
    env = {k: v for k, v in cli_env().items() if k not in {"COLUMNS", "LINES"}}
    env["TERM"] = "xterm-256color"
    pane = Pane(f"stepstream-cli-{os.getpid()}-{uuid.uuid4().hex[:8]}", env)
    command = (
        f"cd {shlex.quote(str(cwd))} && {shlex.quote(sys.executable)} -m stepstream {args}; "
        'echo "exit=$?"; sleep 30'
    )
    pane.tmux("new-session", "-d", "-s", pane.name, "-x", "120", "-y", "40", command)
    socket = Path(pane.tmux("display-message", "-p", "#{socket_path}").strip())
    try:
        yield pane
    finally:
        subprocess.run(
            ["tmux", "-L", pane.name, "kill-server"],
            capture_output=True,
            timeout=10,
            check=False,
            env=env,
        )
        socket.unlink(missing_ok=True)


def test_live_view_streaming_example_in_a_terminal(tmp_path: Path) -> None:
    """On a terminal, `run` shows step rows, a spinner, running text, then result and ids."""
    with tmux_run(tmp_path, f"run {shlex.quote(str(EXAMPLE))}") as pane:
        mid = pane.poll(r"step_two\s+running")
        assert re.search(rf"^{SPINNER}\s+step_two\s+running$", mid, re.MULTILINE), mid
        assert re.search(r"^✓\s+step_one\s+done in [\d.]+ m?s$", mid, re.MULTILINE), mid
        assert re.search(r"^·\s+step_three\s+waiting$", mid, re.MULTILINE), mid
        assert re.search(r"^MyWorkflow  run [0-9a-f]{12}  elapsed +\d+\.\ds$", mid, re.MULTILINE), (
            mid
        )
        assert "ProgressEvent msg='Step one is happening'" in mid
        mid = pane.poll(r"Call me Ishmael\.")
        assert "ProgressEvent msg='Call" not in mid  # text deltas run together as text

        final = pane.poll(r"^exit=\d+$")
        assert re.search(r"^exit=0$", final, re.MULTILINE), final
        for name in ("step_one", "step_two", "step_three"):
            assert re.search(rf"^✓\s+{name}\s+done in [\d.]+ m?s$", final, re.MULTILINE), final
        assert "Call me Ishmael. Some years ago" in final
        assert "ProgressEvent msg='Step three is happening'" in final
        assert re.search(r"^Result: Workflow complete\.$", final, re.MULTILINE), final
        assert IDS_LINE.search(final), final
    assert (tmp_path / ".stepstream" / "traces.jsonl").is_file()


def test_live_view_shows_retries_and_the_failure_in_red(work: Path) -> None:
    """On a terminal, a retried then failing step shows 'retrying', then a red error row."""
    with tmux_run(work, "run flaky.py") as pane:
        retrying = pane.poll(r"flaky\s+retrying")
        assert re.search(
            r"^↻\s+flaky\s+retrying: ValueError: flaky failure$", retrying, re.MULTILINE
        )
        final = pane.poll(r"^exit=\d+$")
        assert re.search(r"^exit=1$", final, re.MULTILINE), final
        row = r"^✗\s+flaky\s+error: ValueError: flaky failure  \(1 retry\)$"
        assert re.search(row, final, re.MULTILINE), final
        coloured = pane.capture(escapes=True)
        red = r"\x1b\[(?:[0-9;]*;)?31m[^\x1b]*error: ValueError: flaky failure"
        assert re.search(red, coloured), coloured
        assert re.search(r"^ValueError: flaky failure$", final, re.MULTILINE), final


def test_live_view_ctrl_c_exits_130(work: Path) -> None:
    """Ctrl-C typed in the terminal cancels the live run, says so, and exits 130."""
    with tmux_run(work, "run slow.py") as pane:
        pane.poll(r"crawl\s+running")
        pane.send_keys("C-c")
        final = pane.poll(r"^exit=\d+$", timeout=15)
        assert re.search(r"^exit=130$", final, re.MULTILINE), final
        assert "interrupted: the run was cancelled" in final


def test_live_view_human_in_the_loop_prompts_on_the_terminal(work: Path) -> None:
    """On a terminal, an input request pauses the live view, prompts, and takes the answer."""
    with tmux_run(work, "run ask.py") as pane:
        pane.poll(r"Name\?")
        pane.send_keys("Ada", "Enter")
        final = pane.poll(r"^exit=\d+$", timeout=15)
        assert re.search(r"^exit=0$", final, re.MULTILINE), final
        assert re.search(r"^Result: hello Ada$", final, re.MULTILINE), final
