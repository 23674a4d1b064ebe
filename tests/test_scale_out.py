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
from collections.abc import Iterator
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

SCALE_APP = Path(__file__).parent / "_scale_app.py"

#: The lease of the replicas of these tests: a dead one's runs move after this.
LEASE = 2.0


#: Every replica a test started: stopped (by pid) when the test ends, whatever happened.
_STARTED: list[ServeProcess] = []


@pytest.fixture(autouse=True)
def _stop_replicas() -> Iterator[None]:
    yield
    while _STARTED:
        _STARTED.pop().stop()


def replica(directory: Path, url: str, name: str, *args: str, app: Path = APP) -> ServeProcess:
    """A replica named ``name`` serving ``app`` from ``directory`` on database ``url``."""
    server = ServeProcess(
        app,
        f"--durable={url}",
        "--instance-id",
        name,
        "--failover-after",
        str(LEASE),
        "--idle-release-after",
        "0",
        "--telemetry-dir",
        str(directory / f"telemetry-{name}"),
        *args,
        cwd=directory,
        env={"OTEL_METRIC_EXPORT_INTERVAL": "500"},
    )
    _STARTED.append(server)
    return server


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
        wait_for(lambda: bool(logged(second, "run_failed_over")), "the log line", 5)
        [line] = logged(second, "run_failed_over")
        assert (line["run_id"], line["from_instance"], line["to_instance"]) == ("c1", "a", "b")
        assert took < LEASE + LEASE / 3 + 5, took  # the lease, a renewal, DBOS's queue poll
        print(f"lease {LEASE} s: the run ended {took:.2f} s after the kill")  # noqa: T201
        whole = frames(second.url, "c1", params={"after_sequence": "-1"})
        assert [f.seq for f in whole] == list(range(len(whole)))
    finally:
        first.stop()
        second.stop()
    assert counted(tmp_path / "telemetry-b", "stepstream.runs.failed_over") == {"Chain": 1.0}


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


def overlap(directory: Path, ended: dict[str, float] | None = None) -> int:
    """The most runs of ``Limited`` that were in their step at once, in any replica.

    A step that began in a process that then died or stopped (``ended``: its pid -> when)
    was in it until then.
    """
    begins: dict[tuple[str, str], float] = {}
    moments: list[tuple[float, int]] = []
    for line in (directory / "effects.txt").read_text().splitlines():
        kind, _, _, key, pid, when = line.split("|")
        if kind == "begin":
            begins[key, pid] = float(when)
        elif kind == "end":
            moments += [(begins.pop((key, pid)), 1), (float(when), -1)]
    for (_, pid), began in begins.items():
        moments += [(began, 1), ((ended or {})[pid], -1)]
    most = now = 0
    for _, change in sorted(moments):
        now += change
        most = max(most, now)
    return most


def test_num_concurrent_runs_holds_across_the_replicas(tmp_path: Path, postgres: Any) -> None:
    """Twelve runs of a workflow with num_concurrent_runs=2 started on two replicas: at
    most two run at once in the cluster, and the queue's depth is measured."""
    url = postgres.new_database_url()
    servers = [replica(tmp_path, url, name, app=SCALE_APP) for name in ("a", "b")]
    try:
        ids = [f"l{k}" for k in range(12)]
        for k, run_id in enumerate(ids):
            start(servers[k % 2].url, "limited", run_id, x=k)
        for k, run_id in enumerate(ids):
            assert result(servers[(k + 1) % 2].url, run_id)["result"] == k * 2
        assert overlap(tmp_path) == 2

        def started() -> list[str]:
            return sorted(line["run_id"] for s in servers for line in logged(s, "run_started"))

        wait_for(lambda: len(started()) >= len(ids), "the run_started lines", 5)
        assert started() == sorted(ids)  # each started once, where its queue took it; none resumed
        assert not [line for server in servers for line in logged(server, "run_resumed")]
        ran = [line.split("|") for line in (tmp_path / "effects.txt").read_text().splitlines()]
        assert sorted(r[1] for r in ran if r[0] == "done") == sorted(ids)  # each once
    finally:
        for server in servers:
            server.stop()
    # The runs waiting for a slot were measured (each replica reports the cluster's).
    depths = gauged(tmp_path / "telemetry-a", "stepstream.queue.depth")
    assert "Limited" in depths
    assert max(depths["Limited"]) >= 1, depths


def counted(telemetry: Path, metric: str) -> dict[str, float]:
    """The last value of counter ``metric`` by workflow in a replica's metrics.jsonl."""
    found: dict[str, float] = {}
    for line in (telemetry / "metrics.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceMetrics"]:
            for scope in resource["scopeMetrics"]:
                for each in scope["metrics"]:
                    if each["name"] != metric:
                        continue
                    points = (each.get("sum") or each.get("gauge") or {}).get("dataPoints", [])
                    for point in points:
                        labels = {a["key"]: a["value"]["stringValue"] for a in point["attributes"]}
                        value = point.get("asInt", point.get("asDouble", 0))
                        found[labels["stepstream.workflow"]] = float(value)
    return found


def test_an_answer_sent_as_the_run_starts_through_another_replica(
    tmp_path: Path, postgres: Any
) -> None:
    """The answer reaches the run even when it comes before the run asks."""
    url = postgres.new_database_url()
    (tmp_path / "gate-ask").touch()
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        for k in range(5):
            start(first.url, "asking", f"q{k}")
            assert answer(second.url, f"q{k}", f"n{k}").status_code == 200
        for k in range(5):
            assert result(second.url, f"q{k}", timeout=10)["result"] == f"hello n{k}"
    finally:
        first.stop()
        second.stop()


def test_a_started_run_is_known_to_every_replica_when_the_start_returns(
    tmp_path: Path, postgres: Any
) -> None:
    url = postgres.new_database_url()
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        for k in range(30):
            start(first.url, "greeting", f"g{k}", name=f"n{k}")
            found = httpx.get(f"{second.url}/handlers/g{k}", timeout=30)
            assert found.status_code in {200, 202}, (k, found.text)
    finally:
        first.stop()
        second.stop()


def gauged(telemetry: Path, metric: str) -> dict[str, list[float]]:
    """Every value of gauge ``metric`` by workflow in a replica's metrics.jsonl."""
    found: dict[str, list[float]] = {}
    for line in (telemetry / "metrics.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceMetrics"]:
            for scope in resource["scopeMetrics"]:
                for each in scope["metrics"]:
                    if each["name"] == metric:
                        for point in each["gauge"]["dataPoints"]:
                            labels = {
                                a["key"]: a["value"]["stringValue"] for a in point["attributes"]
                            }
                            value = float(point.get("asInt", point.get("asDouble", 0)))
                            found.setdefault(labels["stepstream.workflow"], []).append(value)
    return found
