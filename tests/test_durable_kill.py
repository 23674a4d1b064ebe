"""Durable runs survive ``kill -9``: real processes (tests/_durable_app.py) on SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import stepstream

pytest.importorskip("dbos")

APP = Path(__file__).resolve().parent / "_durable_app.py"
SRC = str(Path(stepstream.__file__).resolve().parent.parent)


def start(directory: Path, mode: str) -> subprocess.Popen[str]:
    """Start the app in ``mode`` on the database in ``directory``."""
    env = {**os.environ, "PYTHONPATH": SRC}
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


def kill_in_step_two(directory: Path) -> subprocess.Popen[str]:
    """Start a run and kill -9 its process while step two waits for the gate."""
    proc = start(directory, "start")
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


def test_a_killed_run_resumes_with_the_same_result_and_no_completed_step_run_again(
    tmp_path: Path,
) -> None:
    """kill -9 while step two runs: one is not run again, two re-runs as the same invocation."""
    reference = tmp_path / "reference"
    reference.mkdir()
    finish(start(reference, "straight"))
    expected = json.loads((reference / "result-straight.txt").read_text())
    assert expected == {"total": 52, "seen": ["one", "two", "three"]}

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    first = kill_in_step_two(crashed)
    before = effects(crashed)
    assert [s for s, _, _ in before] == ["one", "two"]
    seen_before = lines(crashed / "reader-start.txt")
    (crashed / "cursor.txt").write_text(seen_before[-1].split()[0])

    finish(start(crashed, "resume"))
    assert json.loads((crashed / "result-resume.txt").read_text()) == expected
    after = effects(crashed)
    assert [s for s, _, _ in after] == ["one", "two", "two", "three"]
    (one_key, two_key, two_again, _) = [k for _, k, _ in after]
    assert two_again == two_key  # the re-run is the same invocation
    assert one_key != two_key
    assert {pid for s, _, pid in after if s == "one"} == {first.pid}

    # Every seq once, in order, across the crash: the reader before and the one after.
    seen_after = lines(crashed / "reader-resume.txt")
    seqs = [int(line.split()[0]) for line in seen_before + seen_after]
    assert seqs == list(range(len(seqs)))
    labels = [line.split()[1] for line in seen_before + seen_after]
    assert labels[:3] == ["one:0", "one:1", "two:0"]
    assert labels[-1] == "StopEvent"
    assert labels.count("two:1") == 1
    assert labels.count("three:0") == 1
