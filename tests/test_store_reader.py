"""Reading damaged or hostile telemetry directories: every command ends, clearly, at once.

Each test writes a telemetry directory by hand (OTLP/JSON span batches, JSON log lines)
and runs the ``stepstream`` command in-process with click's CliRunner, or as a
subprocess where the old behaviour was to hang or to exhaust memory.
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC
from datetime import datetime
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from click.testing import Result

from _helpers import without_otel
from stepstream.cli import main
from stepstream.telemetry import attributes as attrs

NOW_NS = time.time_ns()
TRACE = "0af7651916cd43dd8448eb211c80319c"
RUN_ID = "3f2a0000000000000000000000000001"


def attr(key: str, value: Any) -> dict[str, Any]:
    """One OTLP/JSON attribute."""
    if isinstance(value, dict):
        return {"key": key, "value": value}
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


def span(
    name: str, span_id: str, parent: str | None = None, start: int = 0, **extra: Any
) -> dict[str, Any]:
    """One OTLP/JSON span of TRACE; ``extra`` keys override the defaults."""
    raw: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": span_id,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(NOW_NS + start),
        "endTimeUnixNano": str(NOW_NS + start + 1_000_000),
        "attributes": [attr(attrs.RUN_ID, RUN_ID), attr(attrs.WORKFLOW, "Flow")],
        "status": {},
    }
    if parent is not None:
        raw["parentSpanId"] = parent
    raw.update(extra)
    return raw


def run_span(**extra: Any) -> dict[str, Any]:
    """The run span of the test run."""
    base = span("invoke_workflow Flow", "a" * 16)
    base["attributes"].append(attr(attrs.RUN_STATUS, "ok"))
    return {**base, **extra}


def step_span(span_id: str = "b" * 16, **extra: Any) -> dict[str, Any]:
    """A step span of the test run, with one streamed event."""
    base = span("run_step work", span_id, "a" * 16, start=1000)
    base["attributes"] += [attr(attrs.STEP, "work"), attr(attrs.EVENTS_STREAMED, 1)]
    base["events"] = [
        {
            "timeUnixNano": str(NOW_NS + 2000),
            "name": attrs.STREAM_EVENT,
            "attributes": [
                attr(attrs.EVENT_TYPE, "Note"),
                attr(attrs.EVENT_SEQ, 0),
                attr(attrs.EVENT_PAYLOAD, '{"n": 1}'),
            ],
        }
    ]
    return {**base, **extra}


def batch(*spans: dict[str, Any]) -> str:
    """One trace file line holding ``spans``."""
    return json.dumps(
        {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": list(spans)}]}]}
    )


def log_line(event: str, **fields: Any) -> str:
    """One log file line."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"timestamp": stamp, "level": "info", "event": event, **fields})


@pytest.fixture
def tele(tmp_path: Path) -> Path:
    """An empty telemetry directory."""
    path = tmp_path / "tele"
    path.mkdir()
    return path


def write(path: Path, *lines: str | bytes) -> None:
    """Write ``lines`` to ``path``, each ended by a newline."""
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))


def invoke(tele: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``stepstream ARGS --telemetry-dir tele`` in-process; it must end without a traceback."""
    started = time.monotonic()
    result = CliRunner().invoke(main, [*args, "--telemetry-dir", str(tele)], env=env)
    assert time.monotonic() - started < 10
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(result.output) from result.exception
    return result


def warnings_of(result: Result) -> list[str]:
    """The ``warning: `` lines the command printed, without the prefix."""
    lines = result.stderr.splitlines()
    return [line.split("warning: ", 1)[1] for line in lines if "warning: " in line]


def error_of(result: Result) -> str:
    """The ``error: `` message the command printed."""
    assert result.exit_code == 2, result.output
    return result.stderr.split("error: ", 1)[1].strip()


# -- trace lines that parse but are damaged ------------------------------------------------


def test_deeply_nested_json_is_a_damaged_line(tele: Path) -> None:
    """A line nested 100,000 deep is skipped with a warning, not a RecursionError."""
    write(tele / "traces.jsonl", "[" * 100_000 + "]" * 100_000, batch(run_span(), step_span()))
    write(tele / "logs.jsonl", '{"a":' * 100_000 + "1" + "}" * 100_000, log_line("run_started"))
    listed = invoke(tele, "traces", "list")
    assert listed.exit_code == 0
    damaged = f"{tele / 'traces.jsonl'}:1: damaged line skipped (not valid JSON)"
    assert warnings_of(listed) == [damaged]
    assert "Flow" in listed.stdout
    logs = invoke(tele, "logs")
    assert warnings_of(logs) == [f"{tele / 'logs.jsonl'}:1: damaged line skipped (not valid JSON)"]
    assert "run_started" in logs.stdout


def test_deeply_nested_attribute_value_is_a_damaged_span(tele: Path) -> None:
    """An arrayValue nested deeper than OTLP allows skips that span, with a warning."""
    value: dict[str, Any] = {"stringValue": "x"}
    for _ in range(300):
        value = {"arrayValue": {"values": [value]}}
    bad = step_span()
    bad["attributes"].append({"key": "deep", "value": value})
    write(tele / "traces.jsonl", batch(run_span(), bad))
    result = invoke(tele, "traces", "show", "last")
    assert result.exit_code == 0
    assert warnings_of(result) == [
        (
            f"{tele / 'traces.jsonl'}:1: damaged span skipped (span {'b' * 16}: attribute deep "
            "is nested more than 32 levels deep)"
        )
    ]


def test_a_very_deep_span_tree_is_walked_without_recursion(tele: Path) -> None:
    """A chain of 5,000 nested spans lists and shows (as JSON) without a RecursionError."""
    chain = [run_span()]
    for i in range(1, 5000):
        chain.append(span("run_step s", f"{i:016x}", chain[-1]["spanId"], start=i))
    write(tele / "traces.jsonl", batch(*chain))
    assert invoke(tele, "traces", "list").exit_code == 0
    shown = invoke(tele, "traces", "show", "last", "--json")
    assert len(json.loads(shown.stdout)["spans"]) == 5000


@pytest.mark.parametrize(
    "loop",
    [
        pytest.param({"b" * 16: "b" * 16}, id="own-parent"),
        pytest.param({"b" * 16: "c" * 16, "c" * 16: "b" * 16}, id="two-span-loop"),
        pytest.param({"a" * 16: "b" * 16}, id="run-span-in-a-loop"),
    ],
)
def test_a_span_that_is_its_own_ancestor_is_cut_from_its_parent(
    tele: Path, loop: dict[str, str]
) -> None:
    """A parentSpanId loop is reported and broken; every command still ends."""
    spans = {"a" * 16: run_span(), "b" * 16: step_span(), "c" * 16: step_span("c" * 16)}
    for child, parent in loop.items():
        spans[child]["parentSpanId"] = parent
    write(tele / "traces.jsonl", batch(*spans.values()))
    show = ("traces", "show", "last")
    for args in (("traces", "list"), show, (*show, "--json")):
        result = invoke(tele, *args)
        assert result.exit_code == 0, result.output
        assert any("is its own ancestor" in w for w in warnings_of(result)), result.stderr
    html = tele.parent / "run.html"
    assert invoke(tele, "traces", "export", "last", "--html", str(html)).exit_code == 0
    assert html.exists()


def test_a_loop_warning_names_the_span(tele: Path) -> None:
    """The warning names the file, the line and the span whose parent link is ignored."""
    write(tele / "traces.jsonl", batch(run_span(), step_span(parentSpanId="b" * 16)))
    result = invoke(tele, "traces", "list")
    assert warnings_of(result) == [
        (
            f"{tele / 'traces.jsonl'}:1: span {'b' * 16} is its own ancestor (a parentSpanId "
            "loop); its parent link is ignored"
        )
    ]


DAMAGED_SPANS = [
    pytest.param(
        step_span(attributes=[attr(attrs.EVENTS_STREAMED, "many")]),
        f"span {'b' * 16}: attribute {attrs.EVENTS_STREAMED} is 'many', not an integer",
        id="string-events-streamed",
    ),
    pytest.param(
        step_span(
            events=[
                {
                    "timeUnixNano": str(NOW_NS),
                    "name": attrs.STREAM_EVENT,
                    "attributes": [attr(attrs.EVENT_SEQ, "first")],
                }
            ]
        ),
        f"span {'b' * 16}: event 1: attribute {attrs.EVENT_SEQ} is 'first', not an integer",
        id="string-event-seq",
    ),
    pytest.param(
        step_span(name=5), f"span {'b' * 16}: name is 5, not a string", id="non-string-name"
    ),
    pytest.param(
        step_span(startTimeUnixNano="9" * 30),
        f"span {'b' * 16}: startTimeUnixNano is '{'9' * 30}', not a time in nanoseconds",
        id="start-out-of-range",
    ),
    pytest.param(
        step_span(endTimeUnixNano="-5"),
        f"span {'b' * 16}: endTimeUnixNano is '-5', not a time in nanoseconds",
        id="negative-end",
    ),
    pytest.param(
        step_span(spanId=["b"]), "span 2: spanId is ['b'], not a string", id="list-span-id"
    ),
    pytest.param(
        step_span(attributes=[{"key": "n", "value": {"intValue": "1" * 5000}}]),
        f"span {'b' * 16}: attribute n has an intValue out of the 64-bit range",
        id="huge-int",
    ),
    pytest.param(
        step_span(attributes=[{"key": 7, "value": {"stringValue": "x"}}]),
        f"span {'b' * 16}: attribute 1: key is 7, not a string",
        id="non-string-key",
    ),
    pytest.param(
        step_span(links=[{"traceId": TRACE}]),
        f"span {'b' * 16}: link 1: spanId is missing",
        id="link-without-span-id",
    ),
]


@pytest.mark.parametrize(("damaged", "reason"), DAMAGED_SPANS)
def test_a_damaged_span_is_skipped_with_a_warning(
    tele: Path, damaged: dict[str, Any], reason: str
) -> None:
    """A span with a field of the wrong type or out of range is skipped; its run still shows."""
    write(tele / "traces.jsonl", batch(run_span(), damaged))
    html = tele.parent / "run.html"
    for args in (
        ("traces", "list"),
        ("traces", "show", "last", "--events", "all", "--attributes"),
        ("traces", "show", "last", "--json"),
        ("traces", "export", "last", "--html", str(html)),
    ):
        result = invoke(tele, *args)
        assert result.exit_code == 0, (args, result.output)
        assert warnings_of(result) == [
            f"{tele / 'traces.jsonl'}:1: damaged span skipped ({reason})"
        ], args
    assert "Flow" in html.read_text(encoding="utf-8")


def test_a_run_span_with_an_out_of_range_time_is_not_reported_as_cannot_write(
    tele: Path,
) -> None:
    """`traces export` of damaged data never says 'cannot write' about the HTML file."""
    write(tele / "traces.jsonl", batch(run_span(startTimeUnixNano=str(10**26)), step_span()))
    result = invoke(tele, "traces", "export", "last", "--html", str(tele.parent / "x.html"))
    assert "cannot write" not in result.output
    assert error_of(result) == f"no runs recorded in {tele / 'traces.jsonl'}"


# -- log lines ----------------------------------------------------------------------------


def test_logs_since_treats_a_naive_timestamp_as_utc(tele: Path) -> None:
    """A timestamp without a zone is read as UTC by --since (no TypeError)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    write(
        tele / "logs.jsonl",
        json.dumps({"timestamp": (now - timedelta(hours=2)).isoformat(), "event": "old"}),
        json.dumps({"timestamp": now.isoformat(), "event": "naive_new"}),
        json.dumps({"timestamp": 12, "event": "not_a_time"}),
    )
    result = invoke(tele, "logs", "--since", "1h", "--json")
    assert result.exit_code == 0
    assert [json.loads(x)["event"] for x in result.stdout.splitlines()] == ["naive_new"]


def test_a_log_line_longer_than_the_limit_is_skipped_with_its_line_number(tele: Path) -> None:
    """STEPSTREAM_MAX_LINE_BYTES bounds a line; a longer one is skipped, the rest read."""
    write(
        tele / "logs.jsonl",
        log_line("first"),
        log_line("huge", payload="x" * 5000),
        log_line("last"),
    )
    result = invoke(tele, "logs", "--json", env={"STEPSTREAM_MAX_LINE_BYTES": "1000"})
    assert result.exit_code == 0
    assert [json.loads(x)["event"] for x in result.stdout.splitlines()] == ["first", "last"]
    assert warnings_of(result) == [
        (
            f"{tele / 'logs.jsonl'}:2: damaged line skipped (longer than 1000 bytes; set "
            "STEPSTREAM_MAX_LINE_BYTES to read longer lines)"
        )
    ]


def test_invalid_utf8_in_a_log_line_is_replaced(tele: Path) -> None:
    """Bytes that are not UTF-8 are shown as U+FFFD; the line is kept."""
    write(tele / "logs.jsonl", b'{"event": "bad_\xff\xfe_bytes", "level": "info"}')
    result = invoke(tele, "logs", "--json")
    assert json.loads(result.stdout)["event"] == "bad_\ufffd\ufffd_bytes"


# -- files that are not regular files ------------------------------------------------------


def cli(tele: Path, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """Run the command as a subprocess under a 1 GiB address-space limit."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from stepstream.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args, "--telemetry-dir", str(tele)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=without_otel({"NO_COLOR": "1", "COLUMNS": "300"}),
        check=False,
    )


def test_a_fifo_in_place_of_the_trace_file_is_refused_at_once(tele: Path) -> None:
    """A FIFO named traces.jsonl is an error naming it, not a command that hangs."""
    os.mkfifo(tele / "traces.jsonl")
    proc = cli(tele, "traces", "list")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: cannot read {tele / 'traces.jsonl'}: it is not a regular file (a FIFO); "
        "remove it, or pass another --telemetry-dir"
    )


@pytest.mark.parametrize("name", ["traces.jsonl", "logs.jsonl"])
def test_a_symlink_to_dev_zero_is_refused_at_once(tele: Path, name: str) -> None:
    """A store file that is a symbolic link is not followed (no endless read, no MemoryError)."""
    (tele / name).symlink_to("/dev/zero")
    command = ("traces", "list") if name.startswith("traces") else ("logs",)
    proc = cli(tele, *command)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: cannot read {tele / name}: it is a symbolic link, which stepstream does not "
        "follow; remove it, or pass another --telemetry-dir"
    )


def test_a_directory_in_place_of_the_log_file_is_refused(tele: Path) -> None:
    """A directory named logs.jsonl is a clear error."""
    (tele / "logs.jsonl").mkdir()
    assert error_of(invoke(tele, "logs")) == (
        f"cannot read {tele / 'logs.jsonl'}: it is a directory; remove it, or pass another "
        "--telemetry-dir"
    )


# -- logs --follow ----------------------------------------------------------------------------


@pytest.fixture
def follow(tele: Path) -> Iterator[Path]:
    """``stepstream logs --follow --json`` running on ``tele``; yields its output file.

    Its warnings go to ``err.txt`` beside it.
    """
    out, err = tele.parent / "out.txt", tele.parent / "err.txt"
    with out.open("w", encoding="utf-8") as sink, err.open("w", encoding="utf-8") as errors:
        command = ["logs", "--follow", "--json", "--telemetry-dir", str(tele)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "stepstream", *command],
            stdout=sink,
            stderr=errors,
            env=without_otel({"NO_COLOR": "1", "COLUMNS": "300"}),
        )
        try:
            yield out
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in err.read_text(encoding="utf-8")


def printed(out: Path, count: int, timeout: float = 10) -> list[str]:
    """The events printed so far, once there are ``count`` of them (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        events = [json.loads(x)["event"] for x in out.read_text(encoding="utf-8").splitlines()]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path``."""
    with path.open("ab") as handle:
        handle.write(data)


def test_follow_prints_each_line_once_after_invalid_utf8(tele: Path, follow: Path) -> None:
    """Invalid UTF-8 bytes never make --follow lose its place and print the file again."""
    logs = tele / "logs.jsonl"
    write(logs, log_line("first"))
    assert printed(follow, 1) == ["first"]
    append(logs, b'{"event": "bad_\xff\xff\xff\xff\xff_bytes"}\n')
    assert printed(follow, 2) == ["first", "bad_\ufffd\ufffd\ufffd\ufffd\ufffd_bytes"]
    append(logs, (log_line("third") + "\n").encode())
    time.sleep(1)
    assert printed(follow, 3) == ["first", "bad_\ufffd\ufffd\ufffd\ufffd\ufffd_bytes", "third"]


def test_follow_goes_on_in_the_new_file_after_a_rotation(tele: Path, follow: Path) -> None:
    """When logs.jsonl is rotated, --follow reads the old file's rest, then the new file."""
    logs = tele / "logs.jsonl"
    write(logs, log_line("first"))
    assert printed(follow, 1) == ["first"]
    append(logs, (log_line("second") + "\n").encode())
    logs.rename(tele / "logs.1.jsonl")
    write(logs, log_line("third"))
    assert printed(follow, 3) == ["first", "second", "third"]
    time.sleep(0.5)
    assert printed(follow, 4, timeout=0) == ["first", "second", "third"]


def test_follow_skips_a_damaged_line_with_its_line_number(tele: Path, follow: Path) -> None:
    """A damaged line appended while following is skipped with a file:line warning."""
    logs = tele / "logs.jsonl"
    write(logs, log_line("first"))
    assert printed(follow, 1) == ["first"]
    append(logs, b"{oops\n" + (log_line("third") + "\n").encode())
    assert printed(follow, 2) == ["first", "third"]
    warned = (follow.parent / "err.txt").read_text(encoding="utf-8")
    assert warned == f"warning: {logs}:2: damaged line skipped (not valid JSON)\n"


def test_follow_starts_again_when_the_file_is_truncated(tele: Path, follow: Path) -> None:
    """A log file emptied while followed is read again from its start."""
    logs = tele / "logs.jsonl"
    write(logs, log_line("first"), log_line("second"))
    assert printed(follow, 2) == ["first", "second"]
    logs.write_bytes(b"")
    time.sleep(0.5)
    append(logs, (log_line("after") + "\n").encode())
    assert printed(follow, 3) == ["first", "second", "after"]
