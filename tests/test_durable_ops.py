"""Retries, timeouts and cancel keep their meaning across kill -9 (tests/_durable_ops_app.py)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from _procs import finish
from _procs import kill
from _procs import lines
from _procs import start
from _procs import wait_for

pytest.importorskip("dbos")

APP = Path(__file__).resolve().parent / "_durable_ops_app.py"
RETRY_DELAY = 4.0  # _durable_ops_app.RETRY_DELAY


def attempts(directory: Path) -> list[tuple[str, str, int, int, int]]:
    """The attempts the steps recorded: (step, step key, attempt, pid, start ns)."""
    return [
        (step, key, int(attempt), int(pid), int(ns))
        for step, key, attempt, pid, ns in (
            line.split("|") for line in lines(directory / "effects.txt")
        )
    ]


def test_a_step_in_retry_back_off_keeps_its_attempt_count_and_due_time_across_a_kill(
    tmp_path: Path, durable_url: str
) -> None:
    """kill -9 during the delay after attempt 1: attempt 2 runs when it was due, then 3."""
    env = {"STEPSTREAM_TEST_DATABASE": durable_url}
    proc = start(APP, tmp_path, "retry-start", env=env)
    wait_for(lambda: len(lines(tmp_path / "retries.txt")) == 1, proc, "the retry recorded")
    kill(proc)
    finish(start(APP, tmp_path, "retry-resume", env=env))
    result = json.loads((tmp_path / "result-retry-resume.txt").read_text())
    ran = attempts(tmp_path)
    assert [a for _, _, a, _, _ in ran] == [1, 2, 3]  # not 1, 1, 2, 3: the count goes on
    assert result["retries"] == 2
    assert "attempt 2 fails" in result["last"]
    assert len({key for _, key, _, _, _ in ran}) == 1  # one invocation throughout
    assert ran[0][3] == proc.pid != ran[1][3]
    failed_ns = ran[0][4]
    resumed_ns = int((tmp_path / "resumed-retry-resume.txt").read_text())
    due_ns = failed_ns + RETRY_DELAY * 1e9
    # Attempt 2 ran when it was due before the crash (or at once, when the restart came
    # later than that), not RETRY_DELAY after the restart.
    assert ran[1][4] >= due_ns - 0.05e9
    assert ran[1][4] < max(due_ns, resumed_ns) + 1.5e9
    assert ran[2][4] - ran[1][4] >= RETRY_DELAY * 1e9 - 0.05e9


def test_a_run_timeout_counts_from_the_first_start_across_a_kill(tmp_path: Path) -> None:
    """Workflow(timeout=6): killed after ~1 s, restarted, it times out 6 s after it began."""
    proc = start(APP, tmp_path, "timeout-start")
    wait_for(lambda: len(attempts(tmp_path)) == 1, proc, "the step started")
    time.sleep(1)
    kill(proc)
    finish(start(APP, tmp_path, "timeout-resume"))
    result = json.loads((tmp_path / "result-timeout-resume.txt").read_text())
    assert result["error"] == "WorkflowTimeoutError"
    assert "timed out after 6.0s" in result["message"]
    began_ns = attempts(tmp_path)[0][4]
    ended_ns = int((tmp_path / "ended-timeout-resume.txt").read_text())
    resumed_ns = int((tmp_path / "resumed-timeout-resume.txt").read_text())
    assert resumed_ns - began_ns < 5.5e9, "the restart took too long for this test to tell"
    assert 5.9e9 <= ended_ns - began_ns < 7.5e9  # not 6 s after the restart
    assert [a[0] for a in attempts(tmp_path)] == ["nap", "nap"]  # in flight: it ran again


LONG = {"SLEEPY_TIMEOUT": "120"}


def test_cancel_run_recorded_before_a_kill_stays_final(tmp_path: Path) -> None:
    """cancel_run() returned, then kill -9: the next launch does not resume the run."""
    proc = start(APP, tmp_path, "timeout-cancel", env=LONG)
    wait_for((tmp_path / "cancelled.txt").exists, proc, "the cancel")
    kill(proc)
    assert (tmp_path / "cancelled.txt").read_text() == "True"
    finish(start(APP, tmp_path, "timeout-check", env=LONG))
    said = json.loads((tmp_path / "result-timeout-check.txt").read_text())
    assert "has ended (DBOS status SUCCESS)" in said
    assert [a[0] for a in attempts(tmp_path)] == ["nap"]  # not run again


def test_a_cancel_from_another_process_ends_the_run_where_it_runs(
    tmp_path: Path, durable_url: str
) -> None:
    """runtime.cancel() in process B: process A's run ends cancelled, its stream says so."""
    env = {**LONG, "STEPSTREAM_TEST_DATABASE": durable_url}
    holder = start(APP, tmp_path, "timeout-hold", env=env)
    wait_for(lambda: len(attempts(tmp_path)) == 1, holder, "the step started")
    # Another executor id: B's launch must not take over A's runs (see docs/durable.md).
    finish(start(APP, tmp_path, "timeout-remote", env={**env, "DBOS__VMID": "canceller"}))
    finish(holder)
    result = json.loads((tmp_path / "result-timeout-hold.txt").read_text())
    assert result["error"] == "WorkflowCancelledError"
    assert "was cancelled in its database" in result["message"]
    assert (tmp_path / "terminal-timeout-hold.txt").read_text() == "WorkflowCancelledEvent"
    finish(start(APP, tmp_path, "timeout-check", env=env))
    said = json.loads((tmp_path / "result-timeout-check.txt").read_text())
    assert "has ended (DBOS status CANCELLED)" in said
    assert [a[0] for a in attempts(tmp_path)] == ["nap"]


def test_a_run_pending_after_a_kill_and_cancelled_is_not_resumed(tmp_path: Path) -> None:
    """kill -9, runtime.cancel() from a new process, relaunch: the run stays cancelled."""
    proc = start(APP, tmp_path, "timeout-start", env=LONG)
    wait_for(lambda: len(attempts(tmp_path)) == 1, proc, "the step started")
    kill(proc)
    finish(start(APP, tmp_path, "timeout-remote", env=LONG))
    finish(start(APP, tmp_path, "timeout-check", env=LONG))
    said = json.loads((tmp_path / "result-timeout-check.txt").read_text())
    assert "has ended" in said
    assert "PENDING" not in said
    # The remote process may have resumed the run before cancelling it (its launch
    # does): the step then began again once, never after the cancel.
    assert [a[0] for a in attempts(tmp_path)] in (["nap"], ["nap", "nap"])


VERSION_APP = Path(__file__).resolve().parent / "_durable_version_app.py"

ORDERS = '''
"""Version {version} of the orders workflow."""

import asyncio
import os
from pathlib import Path

from stepstream import Context, Workflow, step
from stepstream.events import Event, StartEvent, StopEvent


class Packed(Event):
    items: int
{extra}

class Order(Workflow):
    directory: Path

    @step
    async def take(self, ev: StartEvent) -> Packed:
        return Packed(items=3)

    @step
    async def pack(self, ctx: Context, ev: Packed) -> StopEvent:
        with (self.directory / "effects.txt").open("a") as out:
            out.write(f"pack|{{ctx.step_key}}|1|{{os.getpid()}}|0\\n")
        while not (self.directory / "gate").exists():
            await asyncio.sleep(0.01)
        return StopEvent(result="v{version} packed " + str(ev.items))
'''


def orders_files(directory: Path) -> tuple[Path, Path]:
    """Two versions of a workflow file: v2's event has one more field."""
    v1, v2 = directory / "orders_v1.py", directory / "orders_v2.py"
    v1.write_text(ORDERS.format(version=1, extra=""))
    v2.write_text(ORDERS.format(version=2, extra="    weight: float = 0.0\n"))
    return v1, v2


def killed_in_pack(directory: Path, version_file: Path) -> None:
    """Start an Order run with ``version_file`` and kill -9 it while ``pack`` waits."""
    proc = start(VERSION_APP, directory, version_file, "start")
    wait_for(lambda: len(attempts(directory)) == 1, proc, "step pack")
    time.sleep(0.3)  # the checkpoint after take is committed
    kill(proc)


def test_a_deploy_of_another_version_leaves_the_run_to_the_old_one(tmp_path: Path) -> None:
    """v1 killed mid-run; v2 refuses it, naming run and versions; v1 again finishes it."""
    v1, v2 = orders_files(tmp_path)
    killed_in_pack(tmp_path, v1)
    run_id = (tmp_path / "run_id.txt").read_text()
    out = finish(start(VERSION_APP, tmp_path, v2, "resume", env={"TAG": "v2"}))
    refused = json.loads((tmp_path / "result-v2.txt").read_text())
    assert refused["error"] == "DurableVersionError"
    message = refused["message"]
    assert message.startswith(f"durable run {run_id} of workflow orders.Order was started by")
    assert "it is left pending" in message
    assert message in out  # the launch logged it
    versions = re.findall(r"version (graph-[0-9a-f]{16})", message)
    assert len(set(versions)) == 2
    assert len(attempts(tmp_path)) == 1  # v2 ran none of it
    finish(start(VERSION_APP, tmp_path, v1, "resume", env={"TAG": "v1"}))
    assert json.loads((tmp_path / "result-v1.txt").read_text()) == "v1 packed 3"


def test_on_version_mismatch_resume_takes_the_run_on_the_new_version(tmp_path: Path) -> None:
    """ON_VERSION_MISMATCH=resume: v2 resumes v1's run (v1's checkpoint reads as v2's)."""
    v1, v2 = orders_files(tmp_path)
    killed_in_pack(tmp_path, v1)
    env = {"TAG": "v2", "ON_VERSION_MISMATCH": "resume"}
    out = finish(start(VERSION_APP, tmp_path, v2, "resume", env=env))
    assert json.loads((tmp_path / "result-v2.txt").read_text()) == "v2 packed 3"
    assert "resuming it (on_version_mismatch='resume')" in out


def test_a_run_whose_first_step_kills_its_process_resumes(tmp_path: Path, durable_url: str) -> None:
    """The first step runs only once the run is recorded: its kill -9 loses nothing."""
    env = {"STEPSTREAM_TEST_DATABASE": durable_url}
    proc = start(APP, tmp_path, "abrupt-start", env=env)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    finish(start(APP, tmp_path, "abrupt-resume", env=env))
    assert json.loads((tmp_path / "result-abrupt-resume.txt").read_text()) == "survived"
    ran = attempts(tmp_path)
    assert len(ran) == 2
    assert ran[0][1] == ran[1][1]  # the same invocation ran again


def test_a_run_killed_while_its_ended_steps_stop_ends_with_the_same_result(
    tmp_path: Path,
) -> None:
    """kill -9 after the StopEvent, before the run's end is recorded: it ends the same."""
    proc = start(APP, tmp_path, "race-start")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    finish(start(APP, tmp_path, "race-resume"), timeout=25)
    assert json.loads((tmp_path / "result-race-resume.txt").read_text()) == "fast"


def test_re_attaching_to_a_run_whose_end_was_recorded_before_a_kill_says_it_ended(
    tmp_path: Path,
) -> None:
    """kill -9 once the run's end is recorded, before DBOS's own record: it has ended."""
    proc = start(APP, tmp_path, "ending-start")
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    started = time.monotonic()
    finish(start(APP, tmp_path, "ending-resume"), timeout=25)  # re-attaches at once
    said = json.loads((tmp_path / "result-ending-resume.txt").read_text())
    assert said.endswith(" has ended; only a run that is still going can be re-attached")
    assert time.monotonic() - started < 15  # not after handler()'s 30 s wait
    assert [a[0] for a in attempts(tmp_path)] == ["last"]  # not run again
