"""Durable runs of every kind under a seeded schedule of kill -9 (tests/_durable_chaos_app.py).

A driver process runs chains, fan-out/fan-in runs, runs waiting for a human (released
from memory while they wait, reloaded by the answer), runs with a step in retry back-off
and runs with a long step; the test kills it with SIGKILL at a
seeded random moment after each launch, starts it again, and so on for
``$STEPSTREAM_CHAOS_KILLS`` kills (50 by default); then lets it finish every run. For every
run: the result is an uninterrupted run's; each completed step ran to completion once
(its side effect is never repeated once its completion was recorded, a retry's attempt
count never goes back); its reader saw each seq once; its spans form one trace with no
span event twice. ``STEPSTREAM_CHAOS_SEED`` reproduces a schedule;
``STEPSTREAM_CHAOS_DATABASE=postgres`` runs it on Postgres (about as long again).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from _procs import SRC
from _procs import lines

pytest.importorskip("dbos")

import _durable_chaos_app as chaos

APP = Path(__file__).resolve().parent / "_durable_chaos_app.py"
SEED = int(os.environ.get("STEPSTREAM_CHAOS_SEED", "16"))
KILLS = int(os.environ.get("STEPSTREAM_CHAOS_KILLS", "50"))
#: ``sqlite`` (a file in the test's directory), or ``postgres`` (the session's server).
DATABASE = os.environ.get("STEPSTREAM_CHAOS_DATABASE", "sqlite")
#: How long after an incarnation's launch it is killed: uniform in this range (seconds). The
#: runs a launch resumes start about 1 s after it (DBOS's recovery queue polls each second).
KILL_AFTER = (0.05, 2.0)
#: Steps that wait for an event: when their run is released (parked) and reloaded, they
#: run again to their wait in the same process.
WAITING = {"ask"}
#: Steps each kind of run completes (invocations with a recorded completion).
STEPS = {"chain": 3, "fan": 7, "ask": 2, "flaky": 2, "long": 2}


class Zygote:
    """The driver's zygote: forks incarnations, reaps them (see the app's docstring)."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), str(directory), "zygote"],
            env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{APP.parent}", **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, command: str) -> list[str]:
        """Send one command; its answer's words."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().split()

    def close(self) -> None:
        """Stop the zygote."""
        if self.proc.poll() is None:
            self.ask("quit")
            self.proc.wait(timeout=10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def run_schedule(directory: Path, env: dict[str, str]) -> tuple[int, list[int]]:
    """Kill incarnations until KILLS kills, then let one finish; (incarnations, statuses)."""
    rng = random.Random(SEED)  # noqa: S311 - a reproducible schedule, not a secret
    zygote = Zygote(directory, env)
    statuses: list[int] = []
    deadline = time.monotonic() + 240
    try:
        n = 0
        while not (directory / "all-done").exists():
            n += 1
            assert time.monotonic() < deadline, f"not done after {n} incarnations"
            if n > KILLS:
                (directory / "no-more-kills").touch()
            pid = int(zygote.ask(f"fork {n}")[1])
            if n <= KILLS:
                launched = directory / f"launched-{n}"
                while not launched.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(*KILL_AFTER))
                os.kill(pid, signal.SIGKILL)
            statuses.append(int(zygote.ask(f"wait {pid}")[2]))
            if n > KILLS + 3:
                pytest.fail(f"the last incarnations did not finish: {statuses[-3:]}")
    finally:
        zygote.close()
    return n, statuses


def records(directory: Path) -> list[list[str]]:
    """effects.txt: [kind, run, step, key, attempt, pid, ns] per line."""
    return [line.split("|") for line in lines(directory / "effects.txt")]


def check_steps(directory: Path) -> dict[str, int]:
    """No step ran again once its completion was recorded; attempts never went back.

    Two witnesses of "recorded": the ``done`` line (an observer is told a step ended only
    once its completion is recorded; a process killed right after the commit tells no
    one), and the journal itself (recorded.json: when each completion's checkpoint was
    taken; every attempt of that step began before).
    """
    done: dict[str, int] = {}  # key -> index of its done record
    attempts: defaultdict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for index, (kind, _, step, key, attempt, pid, ns) in enumerate(records(directory)):
        if kind == "done":
            assert key not in done, f"step {key} was told complete twice"
            done[key] = index
            continue
        assert key not in done, f"step {key} ran again after its completion was recorded"
        previous = attempts[key]
        if step not in WAITING:  # a step waiting when its run is released runs again here
            assert (int(attempt), pid) not in {(a, p) for a, p, _ in previous}, (key, pid)
        assert not previous or int(attempt) >= previous[-1][0], f"{key}: attempts went back"
        previous.append((int(attempt), pid, int(ns)))
    recorded = json.loads((directory / "recorded.json").read_text())
    for run_id in chaos.PLAN:
        keys = {key for key in attempts if key.startswith(f"{run_id}:")}
        assert len(keys) == STEPS[run_id.partition("-")[0]], (run_id, sorted(keys))
        (end_ns, _) = recorded[run_id][-1]
        completed_at: dict[str, int] = {}
        for ns, done_keys in recorded[run_id]:
            for key in done_keys:
                completed_at.setdefault(key, ns)  # the first record; a second is a re-run
        for key in keys:
            last_begun = max(ns for _, _, ns in attempts[key])
            assert last_begun < completed_at.get(key, end_ns), f"{key} ran after it was recorded"
    return {
        "steps": len(attempts),
        "told": len(done),
        "re-run in flight": sum(1 for a in attempts.values() if len({p for _, p, _ in a}) > 1),
        "attempts": sum(len(a) for a in attempts.values()),
    }


def check_readers(directory: Path) -> int:
    """Every run's reader saw seq 0, 1, 2... once each, ending with the StopEvent."""
    total = 0
    for run_id in chaos.PLAN:
        seen = [line.split("|") for line in lines(directory / f"reader-{run_id}.txt")]
        seqs = [int(seq) for seq, _ in seen]
        assert seqs == list(range(len(seqs))), f"{run_id}: {seqs}"
        assert seen[-1][1] == "StopEvent", run_id
        total += len(seqs)
    return total


def check_spans(directory: Path) -> int:
    """Each run's spans (all incarnations) are in one trace; no span event twice."""
    traces: defaultdict[str, set[str]] = defaultdict(set)
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    for path in directory.glob("spans-*.jsonl"):
        for line in lines(path):
            span = json.loads(line)
            run_id = span["attributes"].get("stepstream.run_id")
            if run_id is None:
                continue
            traces[run_id].add(span["trace_id"])
            seqs[run_id] += [
                e["attributes"]["stepstream.event.seq"]
                for e in span["events"]
                if e["name"] == "stepstream.event"
            ]
    for run_id in chaos.PLAN:
        assert len(traces[run_id]) == 1, f"{run_id} is in {len(traces[run_id])} traces"
        twice = [seq for seq, n in Counter(seqs[run_id]).items() if n > 1]
        assert not twice, f"{run_id}: span events for seq {twice} twice"
    return sum(len(s) for s in seqs.values())


def expected(directory: Path) -> dict[str, Any]:
    """The results of uninterrupted runs (in memory, in this process)."""
    elsewhere = directory / "reference"
    elsewhere.mkdir()
    return asyncio.run(chaos.reference(elsewhere))


def test_runs_of_every_kind_survive_a_seeded_kill_9_schedule(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """KILLS kill -9s at seeded moments: every run ends as if never interrupted."""
    started = time.monotonic()
    env = {"STEPSTREAM_CHAOS_KILLS": str(KILLS)}
    if DATABASE == "postgres":
        env["STEPSTREAM_TEST_DATABASE"] = request.getfixturevalue("postgres").new_database_url()
    incarnations, statuses = run_schedule(tmp_path, env)
    assert statuses[:KILLS] == [signal.SIGKILL] * KILLS  # each was killed, none died alone
    last = lines(tmp_path / f"out-{incarnations}.txt")
    assert statuses[KILLS:] == [0] * (incarnations - KILLS), last
    results = dict(line.split("|", 1) for line in lines(tmp_path / "results.txt"))
    want = expected(tmp_path)
    assert {run_id: json.loads(value) for run_id, value in results.items()} == want
    steps = check_steps(tmp_path)
    events = check_readers(tmp_path)
    span_events = check_spans(tmp_path)
    assert steps["re-run in flight"] > 0  # the kills did land inside steps
    print(  # noqa: T201 - the schedule's figures, shown with -s
        f"{DATABASE}, seed {SEED}: {KILLS} kills over {incarnations} incarnations, "
        f"{len(chaos.PLAN)} runs, {steps}, {events} events read, {span_events} span events, "
        f"{time.monotonic() - started:.1f} s"
    )
