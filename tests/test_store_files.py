"""The embedded telemetry files as written: flushed in time, private, safe to open, rotated.

configure_telemetry() sets process-global providers, so each test runs a script in its
own Python process (see test_configure_telemetry.py).
"""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _helpers import SCRIPT_NAME
from _helpers import last_json_line
from _helpers import otlp_spans
from _helpers import run_script
from _helpers import script_env
from _helpers import stepstream_cli

CHATTY = """
import asyncio
import json
import sys
import time
from typing import Any

from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step
from stepstream.telemetry import configure_telemetry


class Note(Event):
    i: int
    text: str = ""


class Chatty(Workflow):
    @step
    async def chatter(self, ctx: Context[Any], ev: StartEvent) -> StopEvent:
        for i in range(ev["n"]):
            ctx.write_event_to_stream(Note(i=i, text=ev.get("text", "")))
        return StopEvent(result="ok")


async def run_chatty(n: int, text: str = "") -> str:
    handler = Chatty(timeout=60).run(n=n, text=text)
    async for _ in handler.stream_events():
        pass
    assert await handler == "ok"
    return handler.run_id
"""


def start_script(
    tmp_path: Path, body: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """Start CHATTY + ``body`` as a script in tmp_path; its stdout is piped."""
    script = tmp_path / SCRIPT_NAME
    script.write_text(CHATTY + body, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=script_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def log_events(path: Path) -> list[str]:
    """The ``event`` of every line of a log file (every line must be complete JSON)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line)["event"] for line in text.splitlines()]


# -- log lines reach the file within the flush interval ---------------------------------


@pytest.mark.parametrize(
    ("configured", "wait"),
    [
        pytest.param("", 1.6, id="default-interval"),
        pytest.param("log_flush_interval=0.2", 0.6, id="configured-interval"),
    ],
)
def test_log_lines_and_spans_survive_sigkill_after_the_flush_interval(
    tmp_path: Path, configured: str, wait: float
) -> None:
    """A process killed with SIGKILL an interval after its last line has every line on disk."""
    body = f"""
configure_telemetry(directory="tele", {configured})
run_id = asyncio.run(run_chatty(20))
print(run_id, flush=True)
time.sleep(60)
"""
    # Spans go out after the batch processor's schedule delay (5 s unless set).
    with start_script(tmp_path, body, {"OTEL_BSP_SCHEDULE_DELAY": "200"}) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            run_id = proc.stdout.readline().strip()
            assert run_id, proc.stderr.read()
            time.sleep(wait)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    events = log_events(tmp_path / "tele" / "logs.jsonl")
    assert events[0] == "run_started"
    assert events.count("stream_event") == 21  # 20 notes and the StopEvent
    assert events[-1] == "run_finished"
    names = {span["name"] for span in otlp_spans(tmp_path / "tele" / "traces.jsonl")}
    assert names == {"invoke_workflow Chatty", "run_step chatter"}


def test_a_process_that_never_shuts_telemetry_down_exits_at_once(tmp_path: Path) -> None:
    """The flusher thread never holds up the exit of a process, whatever its interval."""
    body = """
configure_telemetry(directory="tele", log_flush_interval=30)
asyncio.run(run_chatty(5))
print(time.monotonic(), flush=True)
"""
    started = time.monotonic()
    proc = run_script(tmp_path, CHATTY + body)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 15
    events = log_events(tmp_path / "tele" / "logs.jsonl")
    assert events[-1] == "run_finished"  # flushed at exit


def test_the_flusher_thread_ends_after_shutdown(tmp_path: Path) -> None:
    """handle.shutdown() stops the writer's flusher thread (within one interval)."""
    body = """
import threading

def threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("stepstream"))

handle = configure_telemetry(directory="tele", log_flush_interval=0.2)
asyncio.run(run_chatty(5))
during = threads()
handle.shutdown()
time.sleep(0.6)
print(json.dumps({"during": during, "after": threads()}))
"""
    summary = last_json_line(run_script(tmp_path, CHATTY + body))
    assert "stepstream-log-flush" in summary["during"]
    assert summary["after"] == []


def test_a_forked_child_does_not_write_the_parents_lines_again(tmp_path: Path) -> None:
    """Lines buffered when a process forks are written once, not by parent and child."""
    body = """
import os

handle = configure_telemetry(directory="tele", log_flush_interval=30)
asyncio.run(run_chatty(3))
pid = os.fork()
if pid == 0:
    handle.shutdown()  # the child flushes what its buffer holds, then leaves
    os._exit(0)
os.waitpid(pid, 0)
handle.shutdown()
"""
    proc = run_script(tmp_path, CHATTY + body)
    assert proc.returncode == 0, proc.stderr
    events = log_events(tmp_path / "tele" / "logs.jsonl")
    assert events.count("run_started") == 1, events
    assert events.count("stream_event") == 4  # 3 notes and the StopEvent


# -- private, and never through a link or into something that is not a file ----------------


def test_store_directory_is_created_0700_and_files_0600(tmp_path: Path) -> None:
    """Payloads can be private: only the owner may list the directory or read the files."""
    body = """
handle = configure_telemetry(directory="deep/tele")
asyncio.run(run_chatty(2))
handle.shutdown()
"""
    proc = run_script(tmp_path, CHATTY + body)
    assert proc.returncode == 0, proc.stderr
    tele = tmp_path / "deep" / "tele"
    assert stat.S_IMODE(tele.stat().st_mode) == 0o700
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tele.iterdir()}
    assert modes == {"traces.jsonl": 0o600, "logs.jsonl": 0o600, "metrics.jsonl": 0o600}


REFUSED = """
from stepstream.telemetry import TelemetryFileError

try:
    configure_telemetry(directory="tele")
except TelemetryFileError as exc:
    print(json.dumps({"error": str(exc), "oserror": isinstance(exc, OSError)}))
else:
    print(json.dumps({"error": None}))
"""


@pytest.mark.parametrize("name", ["traces.jsonl", "logs.jsonl", "metrics.jsonl"])
def test_a_symlinked_store_file_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    """A store file that is a symbolic link is never followed: a clear error names it."""
    (tmp_path / "tele").mkdir()
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n", encoding="utf-8")
    (tmp_path / "tele" / name).symlink_to(target)
    summary = last_json_line(run_script(tmp_path, CHATTY + REFUSED))
    assert summary["error"] == (
        f"cannot open telemetry file {Path('tele') / name}: it is a symbolic link, which "
        "stepstream does not follow; remove it, or pass another directory"
    )
    assert summary["oserror"] is True
    assert target.read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_store_file_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    """A directory or a FIFO in place of a store file is an error at once (no hang)."""
    (tmp_path / "tele").mkdir()
    path = tmp_path / "tele" / "logs.jsonl"
    if kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    summary = last_json_line(run_script(tmp_path, CHATTY + REFUSED, timeout=20))
    what = "a directory" if kind == "directory" else "not a regular file (a FIFO)"
    assert summary["error"] == (
        f"cannot open telemetry file {Path('tele') / 'logs.jsonl'}: it is {what}; "
        "remove it, or pass another directory"
    )


def test_stepstream_run_reports_a_store_file_that_is_a_directory(tmp_path: Path) -> None:
    """`stepstream run` exits 2 with one error line when a store file is a directory."""
    (tmp_path / "hello.py").write_text(
        "from stepstream import StartEvent, StopEvent, Workflow, step\n\n\n"
        "class Hello(Workflow):\n"
        "    @step\n"
        "    async def hello(self, ev: StartEvent) -> StopEvent:\n"
        "        return StopEvent(result='hello')\n",
        encoding="utf-8",
    )
    (tmp_path / "t" / "traces.jsonl").mkdir(parents=True)
    proc = stepstream_cli("run", "hello.py", "--telemetry-dir", "t", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"error: cannot open telemetry file {Path('t') / 'traces.jsonl'}: it is a directory; "
        "remove it, or pass another directory"
    )


def test_a_store_directory_that_is_a_file_is_refused(tmp_path: Path) -> None:
    """A file where the telemetry directory should be is a clear error."""
    (tmp_path / "tele").write_text("", encoding="utf-8")
    summary = last_json_line(run_script(tmp_path, CHATTY + REFUSED))
    assert summary["error"] == (
        "cannot create telemetry directory tele: a file of that name exists; "
        "remove it, or pass another directory"
    )


def test_a_line_left_unfinished_by_a_killed_process_is_ended_first(tmp_path: Path) -> None:
    """The next process's first line is whole even if the last one was cut short."""
    (tmp_path / "tele").mkdir()
    (tmp_path / "tele" / "logs.jsonl").write_text(
        '{"event": "run_started"}\n{"event": "cut', "utf-8"
    )
    body = """
handle = configure_telemetry(directory="tele")
asyncio.run(run_chatty(2))
handle.shutdown()
"""
    proc = run_script(tmp_path, CHATTY + body)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "tele" / "logs.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[1] == '{"event": "cut'
    assert [json.loads(line)["event"] for line in lines[2:]][:1] == ["run_started"]


# -- size-based rotation -------------------------------------------------------------------


ROTATING = """
handle = configure_telemetry(directory="tele", max_file_bytes={limit}, rotated_files={keep})
run_ids = []
for _ in range({runs}):
    run_ids.append(asyncio.run(run_chatty(40, "x" * 200)))
    handle.force_flush()  # a span batch per run
handle.shutdown()
print(json.dumps(run_ids))
"""


def test_rotation_keeps_files_under_the_limit_and_every_line_whole(tmp_path: Path) -> None:
    """With max_file_bytes, files roll over at line boundaries to <name>.<n>.jsonl."""
    proc = run_script(tmp_path, CHATTY + ROTATING.format(limit=20_000, keep=50, runs=6))
    assert proc.returncode == 0, proc.stderr
    tele = tmp_path / "tele"
    logs = sorted(tele.glob("logs*.jsonl"))
    assert len(logs) > 3
    for path in tele.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        data = path.read_bytes()
        assert data.endswith(b"\n"), path
        if path.name.startswith("logs"):  # a trace batch may be bigger than the limit
            assert len(data) <= 20_000, path
        for line in data.splitlines():
            json.loads(line)
    # Oldest first: logs.<n>.jsonl ... logs.1.jsonl, then logs.jsonl.
    rotated = [p for p in logs if p.name != "logs.jsonl"]
    ordered = [*sorted(rotated, key=lambda p: -int(p.name.split(".")[1])), tele / "logs.jsonl"]
    events = [e for path in ordered for e in log_events(path)]
    assert events.count("run_started") == 6
    assert events.count("stream_event") == 6 * 41
    assert events[0] == "run_started"
    assert events[-1] == "run_finished"


def test_rotation_keeps_only_the_configured_number_of_files(tmp_path: Path) -> None:
    """rotated_files bounds the disk used: older files are deleted."""
    proc = run_script(tmp_path, CHATTY + ROTATING.format(limit=10_000, keep=2, runs=6))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in (tmp_path / "tele").glob("logs*.jsonl"))
    assert names == ["logs.1.jsonl", "logs.2.jsonl", "logs.jsonl"]


def test_the_cli_reads_across_rotated_files_in_order(tmp_path: Path) -> None:
    """`stepstream traces list` and `stepstream logs` read the rotated files too, oldest first."""
    proc = run_script(tmp_path, CHATTY + ROTATING.format(limit=20_000, keep=50, runs=6))
    run_ids = json.loads(proc.stdout.splitlines()[-1])
    assert len(list((tmp_path / "tele").glob("traces.*.jsonl"))) >= 1
    listed = stepstream_cli("traces", "list", "--telemetry-dir", "tele", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert all(run_id[:12] in listed.stdout for run_id in run_ids)
    logs = stepstream_cli("logs", "--json", "--telemetry-dir", "tele", cwd=tmp_path)
    assert logs.returncode == 0, logs.stderr
    lines = [json.loads(line) for line in logs.stdout.splitlines()]
    started = [line["run_id"] for line in lines if line["event"] == "run_started"]
    assert started == run_ids
    stamps = [line["timestamp"] for line in lines]
    assert stamps == sorted(stamps)


def test_a_failed_rotation_is_logged_and_writing_goes_on(tmp_path: Path) -> None:
    """When the full file cannot be renamed, it grows on: no line is lost, nothing raised."""
    (tmp_path / "tele" / "logs.1.jsonl" / "in-the-way").mkdir(parents=True)
    proc = run_script(tmp_path, CHATTY + ROTATING.format(limit=5_000, keep=3, runs=3))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("stepstream: cannot rotate") == 1, proc.stderr
    files = [p for p in (tmp_path / "tele").glob("logs*.jsonl") if p.is_file()]
    events = [event for path in files for event in log_events(path)]
    assert events.count("stream_event") == 3 * 41
    assert (tmp_path / "tele" / "logs.jsonl").stat().st_size > 5_000  # no longer rotated


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        pytest.param(
            "max_file_bytes=0",
            "configure_telemetry(max_file_bytes=0): give a positive number of bytes, or None "
            "(no rotation)",
            id="max_file_bytes",
        ),
        pytest.param(
            "rotated_files=0",
            "configure_telemetry(rotated_files=0): keep at least 1 rotated file",
            id="rotated_files",
        ),
        pytest.param(
            "log_flush_interval=0",
            "configure_telemetry(log_flush_interval=0): give a positive number of seconds",
            id="log_flush_interval",
        ),
    ],
)
def test_invalid_file_options_are_refused(tmp_path: Path, argument: str, message: str) -> None:
    """Rotation and flush options are checked when configure_telemetry() is called."""
    body = f"""
from stepstream import WorkflowValidationError

try:
    configure_telemetry(directory="tele", {argument})
except WorkflowValidationError as exc:
    print(json.dumps({{"error": str(exc)}}))
"""
    assert last_json_line(run_script(tmp_path, CHATTY + body))["error"] == message
    assert not (tmp_path / "tele").exists()


def test_a_huge_span_batch_is_written_as_several_lines(tmp_path: Path) -> None:
    """Trace lines stay under 8 MiB (each a valid request), so readers can bound a line."""
    body = """
handle = configure_telemetry(directory="tele", payload_limit=100_000)

async def main() -> None:
    await asyncio.gather(*(run_chatty(40, "y" * 20_000) for _ in range(20)))

asyncio.run(main())
handle.shutdown()
"""
    proc = run_script(tmp_path, CHATTY + body, timeout=120)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "tele" / "traces.jsonl"
    sizes = [len(line) for line in path.read_bytes().splitlines()]
    assert sum(sizes) > 12 << 20
    assert max(sizes) <= 8 << 20
    assert len(otlp_spans(path)) == 40
