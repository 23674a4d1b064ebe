"""Replicas of ``stepstream serve --durable postgresql://...`` on one database.

Each replica has an instance id (its DBOS executor id, kept across restarts): a replica
starting does not take over the runs of another live one; a replica killed with SIGKILL
has its runs finished on its restart with the same id, or by a surviving replica once
its lease expires (``--failover-after``); any replica serves any run (its stream live,
an answer, a cancel). Real processes on a real Postgres (Debian's, on 127.0.0.1). The
served workflows are tests/_durable_served_app.py (steps record their side effects in
``effects.txt`` of the test's directory).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from _live_server import ServeProcess
from test_durable_server import APP
from test_durable_server import answer
from test_durable_server import effects
from test_durable_server import frames
from test_durable_server import kill
from test_durable_server import result
from test_durable_server import start
from test_durable_server import wait_for

pytest.importorskip("dbos")

#: The lease of the replicas of these tests: a dead one's runs move after this.
LEASE = 2.0


def replica(directory: Path, url: str, name: str, *args: str) -> ServeProcess:
    """A replica named ``name`` serving the app from ``directory`` on database ``url``."""
    return ServeProcess(
        APP,
        f"--durable={url}",
        "--instance-id",
        name,
        "--failover-after",
        str(LEASE),
        "--idle-release-after",
        "0",
        *args,
        cwd=directory,
    )


def logged(server: ServeProcess, event: str) -> list[dict[str, Any]]:
    """The server's JSON log lines whose event is ``event``."""
    found = []
    for line in list(server.lines):
        if f'"{event}"' in line:
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def pids(directory: Path, name: str) -> set[str]:
    """The pids of the processes where step ``name`` ran."""
    path = directory / "effects.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return {line.split("|")[2] for line in lines if line.split("|")[0] == name}


def test_a_replica_starting_leaves_the_runs_of_a_live_one_alone(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "a")
    second = None
    try:
        start(first.url, "chain", "c1", x=1)
        frames(first.url, "c1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 3)
        second = replica(tmp_path, url, "b")
        time.sleep(LEASE * 1.5)  # B's start-up recovery and a few of its lease rounds
        (tmp_path / "gate").touch()
        assert result(second.url, "c1")["result"] == {"total": 22}
        assert effects(tmp_path) == ["one", "two", "three"]
        assert pids(tmp_path, "two") == {str(first.proc.pid)}
        assert not logged(second, "run_failed_over")
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_second_process_with_the_same_instance_id_is_refused(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "same")
    try:
        with pytest.raises(AssertionError, match="is in use by another live process"):
            replica(tmp_path, url, "same")
    finally:
        first.stop()


def test_a_killed_replica_resumes_its_runs_when_it_restarts_with_its_id(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "a", "--failover-after", "60")
    start(first.url, "chain", "c1", x=1)
    frames(first.url, "c1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 3)
    kill(first)
    (tmp_path / "gate").touch()
    again = replica(tmp_path, url, "a", "--failover-after", "60")
    try:
        assert result(again.url, "c1")["result"] == {"total": 22}
        assert effects(tmp_path) == ["one", "two", "two", "three"]  # two was in flight
        assert pids(tmp_path, "three") == {str(again.proc.pid)}
    finally:
        again.stop()


def test_a_dead_replicas_runs_finish_on_a_survivor_after_its_lease(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        start(first.url, "chain", "c1", x=1)
        frames(first.url, "c1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 3)
        kill(first)
        killed = time.monotonic()
        (tmp_path / "gate").touch()
        assert result(second.url, "c1")["result"] == {"total": 22}
        took = time.monotonic() - killed
        assert effects(tmp_path) == ["one", "two", "two", "three"]
        assert pids(tmp_path, "three") == {str(second.proc.pid)}
        [line] = logged(second, "run_failed_over")
        assert (line["run_id"], line["from_instance"], line["to_instance"]) == ("c1", "a", "b")
        assert took < LEASE + LEASE / 3 + 5, took  # the lease, a renewal, DBOS's queue poll
        whole = frames(second.url, "c1", params={"after_sequence": "-1"})
        assert [f.seq for f in whole] == list(range(len(whole)))
    finally:
        first.stop()
        second.stop()


def test_an_answer_and_a_stream_through_another_replica(tmp_path: Path, postgres: Any) -> None:
    """The run executes on A; B streams it live and takes its answer, promptly."""
    url = postgres.new_database_url()
    (tmp_path / "gate-ask").touch()
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        start(first.url, "asking", "q1")
        frames(second.url, "q1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
        sent = time.monotonic()
        assert answer(second.url, "q1", "ada").status_code == 200
        whole = frames(second.url, "q1", params={"after_sequence": "-1"}, timeout=10)
        took = time.monotonic() - sent
        assert [(f.seq, f.type) for f in whole] == [(0, "InputRequiredEvent"), (1, "StopEvent")]
        assert took < 1.0, took  # notified, not left to the release or a poll
        assert result(first.url, "q1")["result"] == "hello ada"
        assert pids(tmp_path, "answered:ada") == {str(first.proc.pid)}
    finally:
        first.stop()
        second.stop()


def test_a_run_is_cancelled_through_another_replica(tmp_path: Path, postgres: Any) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        start(first.url, "chain", "c1", x=1)
        frames(first.url, "c1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 3)
        sent = time.monotonic()
        response = httpx.post(f"{second.url}/handlers/c1/cancel", timeout=30)
        assert response.status_code == 200, response.text
        took = time.monotonic() - sent
        assert result(first.url, "c1")["status"] == "cancelled"
        assert took < 2.0, took
        wait_for(lambda: "three" not in effects(tmp_path), "nothing after the cancel", 1)
    finally:
        first.stop()
        second.stop()
