"""Durable runs survive ``kill -9``: real processes (tests/_durable_app.py).

The run killed in step two (the ``crash`` fixture) is killed on SQLite and on Postgres.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stepstream

pytest.importorskip("dbos")

APP = Path(__file__).resolve().parent / "_durable_app.py"
SRC = str(Path(stepstream.__file__).resolve().parent.parent)


def start(directory: Path, mode: str, database: str | None = None) -> subprocess.Popen[str]:
    """Start the app in ``mode`` on ``database`` (default: a SQLite file in ``directory``)."""
    env = {**os.environ, "PYTHONPATH": SRC}
    if database is not None:
        env["STEPSTREAM_TEST_DATABASE"] = database
    return subprocess.Popen(
        [sys.executable, str(APP), str(directory), mode],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for ``proc``; its output, asserting it exited cleanly."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def wait_for(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``check`` until true; fail (with the process's output) if it exits or stalls."""
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the app exited before {what}: {out}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def lines(path: Path) -> list[str]:
    """The lines of ``path`` (none if it does not exist)."""
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def effects(directory: Path) -> list[tuple[str, str, int]]:
    """The side effects recorded by the steps: (step, step key, pid)."""
    return [
        (step, key, int(pid))
        for step, key, pid in (line.split("|") for line in lines(directory / "effects.txt"))
    ]


def kill_in_step_two(directory: Path, database: str | None) -> subprocess.Popen[str]:
    """Start a run and kill -9 its process while step two waits for the gate."""
    proc = start(directory, "start", database)
    wait_for(
        lambda: (
            any(s == "two" for s, _, _ in effects(directory))
            and len(lines(directory / "reader-start.txt")) >= 3
        ),
        proc,
        "step two and three streamed events",
    )
    proc.kill()  # SIGKILL: no cleanup of any kind
    proc.communicate(timeout=10)
    return proc


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def crash(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, int, object]:
    """A run killed while step two runs, then resumed: (its directory, pid 1, reference)."""
    database = None
    if request.param == "postgres":
        database = request.getfixturevalue("postgres").new_database_url()
    reference = tmp_path_factory.mktemp("reference")
    finish(start(reference, "straight"))
    expected = json.loads((reference / "result-straight.txt").read_text())
    crashed = tmp_path_factory.mktemp("crashed")
    first = kill_in_step_two(crashed, database)
    seen_before = lines(crashed / "reader-start.txt")
    (crashed / "cursor.txt").write_text(seen_before[-1].split()[0])
    out = finish(start(crashed, "orphan", database))  # a launch without the workflow
    assert "cannot resume in this process: no workflow of that name" in out
    assert "is pending but was not resumed in this process" in (crashed / "orphan.txt").read_text()
    finish(start(crashed, "resume", database))
    return crashed, first.pid, expected


def test_a_killed_run_resumes_with_the_same_result_and_no_completed_step_run_again(
    crash: tuple[Path, int, object],
) -> None:
    """kill -9 while step two runs: one is not run again, two re-runs as the same invocation."""
    crashed, first_pid, expected = crash
    assert expected == {"total": 52, "seen": ["one", "two", "three"]}
    assert json.loads((crashed / "result-resume.txt").read_text()) == expected
    after = effects(crashed)
    assert [s for s, _, _ in after] == ["one", "two", "two", "three"]
    (one_key, two_key, two_again, _) = [k for _, k, _ in after]
    assert two_again == two_key  # the re-run is the same invocation
    assert one_key != two_key
    assert [pid == first_pid for _, _, pid in after] == [True, True, False, False]


def test_a_reader_resuming_after_its_last_seq_sees_every_event_once_in_order(
    crash: tuple[Path, int, object],
) -> None:
    """The reader before the crash and the one after it see seq 0, 1, 2... once each."""
    crashed, _, _ = crash
    seen = lines(crashed / "reader-start.txt") + lines(crashed / "reader-resume.txt")
    seqs = [int(line.split()[0]) for line in seen]
    assert seqs == list(range(len(seqs)))
    labels = [line.split()[1] for line in seen]
    # two:0 twice: step two wrote it, then ran again after the crash (at-least-once).
    assert labels == ["one:0", "one:1", "two:0", "two:0", "two:1", "three:0", "StopEvent"]


def spans(path: Path) -> list[dict[str, Any]]:
    """The spans a process wrote to ``path`` as they ended."""
    return [json.loads(line) for line in lines(path)]


def test_the_resumed_run_continues_the_trace_and_marks_the_replayed_step(
    crash: tuple[Path, int, object],
) -> None:
    """One trace across the crash; the resumed run span says so; no span event twice."""
    crashed, _, _ = crash
    before, after = spans(crashed / "spans-start.jsonl"), spans(crashed / "spans-resume.jsonl")
    assert [s["name"] for s in before] == ["run_step one"]  # the rest died with the process
    original_run_span = before[0]["parent_id"]
    assert {s["trace_id"] for s in before + after} == {before[0]["trace_id"]}
    (resumed,) = [s for s in after if s["name"].startswith("invoke_workflow")]
    attributes = resumed["attributes"]
    assert attributes["stepstream.run.resumed"] is True
    assert attributes["stepstream.run.attempt"] == 3  # DBOS's dispatches: the orphan's was 2
    assert 0 < attributes["stepstream.run.last_checkpoint_ns"] < time.time_ns()
    assert resumed["parent_id"] == original_run_span
    assert resumed["links"] == [original_run_span]
    steps = {s["name"]: s["attributes"] for s in after if s["name"].startswith("run_step")}
    assert steps["run_step two"]["stepstream.step.replayed"] is True
    assert "stepstream.step.replayed" not in steps["run_step three"]
    seqs = [
        e["attributes"]["stepstream.event.seq"]
        for s in before + after
        for e in s["events"]
        if e["name"] == "stepstream.event"
    ]
    # 2 (two:0 before the crash) was on step two's span, which never ended: lost with it.
    assert sorted(seqs) == [0, 1, 3, 4, 5, 6]


def test_the_resumed_process_logs_each_event_once_and_counts_the_resume(
    crash: tuple[Path, int, object],
) -> None:
    """Log lines only for events recorded after the restart; resume metrics are counted."""
    crashed, _, _ = crash
    tel = json.loads((crashed / "telemetry-resume.json").read_text())
    streamed = [line["seq"] for line in tel["logs"] if line["event"] == "stream_event"]
    assert streamed == [3, 4, 5, 6]
    (started,) = [line for line in tel["logs"] if line["event"] == "run_started"]
    assert started["resumed"] is True
    assert started["run_attempt"] == 3
    assert isinstance(started["last_checkpoint_ns"], int)
    replayed = [
        line["step"]
        for line in tel["logs"]
        if line["event"] == "step_started" and line.get("replayed")
    ]
    assert replayed == ["two"]
    assert tel["metrics"]["stepstream.runs.resumed"] == 1
    assert tel["metrics"]["stepstream.steps.replayed"] == 1
    assert tel["histograms"]["stepstream.checkpoint.duration"] >= 1


def test_a_run_waiting_for_an_answer_survives_a_kill_and_takes_the_answer_after(
    tmp_path: Path,
) -> None:
    """kill -9 while a step waits for a human: the answer sent after the restart ends the run."""
    proc = start(tmp_path, "waiting")
    wait_for(lambda: len(lines(tmp_path / "reader-waiting.txt")) == 1, proc, "the question")
    proc.kill()
    proc.communicate(timeout=10)
    assert lines(tmp_path / "reader-waiting.txt") == ["0 InputRequiredEvent"]

    finish(start(tmp_path, "answer"))
    assert json.loads((tmp_path / "result-answer.txt").read_text()) == "hello ada"
    # The whole stream, read again from the start: the question was not asked twice.
    assert lines(tmp_path / "reader-answer.txt") == ["0 InputRequiredEvent", "1 StopEvent"]
    asked = effects(tmp_path)
    assert [s for s, _, _ in asked] == ["ask", "ask"]  # in flight at the kill: it ran again
    assert asked[0][1] == asked[1][1]  # as the same invocation


def test_the_peers_usage_example_runs_with_its_imports_renamed(tmp_path: Path) -> None:
    """llama-agents-dbos's README example (DBOS made by the app, launch_sync) runs as is."""
    url = f"sqlite:///{tmp_path / 'peer.sqlite'}"
    proc = subprocess.run(
        [sys.executable, str(APP.parent / "_peer_app.py"), url],
        env={**os.environ, "PYTHONPATH": SRC},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "done"
    assert (tmp_path / "peer.sqlite").exists()  # the application's database, not ours


def test_a_run_killed_before_its_first_checkpoint_starts_over_in_its_trace(
    tmp_path: Path,
) -> None:
    """kill -9 inside the first step: the run starts again from its start event, same key."""
    (tmp_path / "hold-one").touch()
    proc = start(tmp_path, "start")
    wait_for(lambda: len(lines(tmp_path / "reader-start.txt")) == 1, proc, "one:0 streamed")
    proc.kill()
    proc.communicate(timeout=10)
    (tmp_path / "cursor.txt").write_text("0")
    finish(start(tmp_path, "resume"))
    assert json.loads((tmp_path / "result-resume.txt").read_text())["total"] == 52
    ran = effects(tmp_path)
    assert [s for s, _, _ in ran] == ["one", "one", "two", "three"]
    assert ran[0][1] == ran[1][1]
    seen = lines(tmp_path / "reader-start.txt") + lines(tmp_path / "reader-resume.txt")
    assert [int(line.split()[0]) for line in seen] == list(range(len(seen)))
    assert [line.split()[1] for line in seen][:3] == ["one:0", "one:0", "one:1"]
    (resumed,) = [
        s for s in spans(tmp_path / "spans-resume.jsonl") if s["name"].startswith("invoke")
    ]
    (one,) = [s for s in spans(tmp_path / "spans-resume.jsonl") if s["name"] == "run_step one"]
    assert one["attributes"]["stepstream.step.replayed"] is True
    assert resumed["attributes"]["stepstream.run.attempt"] == 2
