"""Three replicas of ``stepstream serve --durable postgresql://...``, 300 runs, one kill -9.

Runs of five kinds (a chain, a fan-out and fan-in, a question answered through another
replica, a step retried, a workflow limited to two runs at once in the cluster) are
started round-robin on three replica processes sharing one Postgres database (Debian's,
on 127.0.0.1). Mid-flight one replica is killed with SIGKILL and stays dead, another is
stopped and started again with its instance id. Then: every run finished with its
result; a step's side effect (a line in ``effects.txt``, written as the step completes)
happened once, unless the step was in flight in a replica that died or stopped (then
it ran again after); subscribers that reconnect to another replica with
``Last-Event-ID`` saw each seq once, in order; each run's spans, in the replicas'
trace files, are one trace; the limited workflow never had more than two runs in its
step at once; the dead replica's runs were taken over (``run_failed_over``).
The served workflows are tests/_scale_app.py.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from _live_server import ServeProcess
from test_scale_out import logged
from test_scale_out import overlap

pytest.importorskip("dbos")

APP = Path(__file__).parent / "_scale_app.py"
RUNS = 300
KINDS = ("chain", "fan", "ask", "flaky", "limited")
LEASE = 2.0
SUBSCRIBED = 30  # runs followed by a subscriber that reconnects across replicas


class Cluster:
    """The replicas by name; the live ones' URLs; the pids that died or stopped."""

    def __init__(self, directory: Path, url: str) -> None:
        self.directory = directory
        self.url = url
        self.replicas: dict[str, ServeProcess] = {}
        self.every: list[ServeProcess] = []  # every process started, stopped ones too
        self.gone: dict[str, float] = {}  # pid -> when, of the processes ended mid-run
        self.lock = threading.Lock()

    def start(self, name: str) -> None:
        self.replicas[name] = ServeProcess(
            APP,
            f"--durable={self.url}",
            "--instance-id",
            name,
            "--failover-after",
            str(LEASE),
            "--idle-release-after",
            "0",
            "--telemetry-dir",
            str(self.directory / f"telemetry-{name}"),
            cwd=self.directory,
        )
        self.every.append(self.replicas[name])

    def live(self) -> list[str]:
        with self.lock:
            return [s.url for s in self.replicas.values() if s.proc.poll() is None and s.url]

    def pick(self, k: int) -> str:
        urls = self.live()
        return urls[k % len(urls)]

    def stop_all(self) -> None:
        for server in self.replicas.values():
            server.stop()


@pytest.fixture
def cluster(tmp_path: Path, postgres: Any) -> Iterator[Cluster]:
    made = Cluster(tmp_path, postgres.new_database_url())
    try:
        for name in ("a", "b", "c"):
            made.start(name)
        yield made
    finally:
        made.stop_all()


def expected(kind: str, x: int) -> Any:
    """The result of a run of ``kind`` started with ``x``."""
    if kind == "chain":
        return (x + 1) * 10 + 2
    if kind == "fan":
        return sum((x + k) ** 2 for k in range(4))
    if kind == "ask":
        return f"hello {len(f'name{x}')}"
    if kind == "flaky":
        return {"x": x, "retries": 1}
    return x * 2


def steps_of(kind: str) -> list[str]:
    """The steps each run of ``kind`` completes, once each (square: four invocations)."""
    return {
        "chain": ["one", "two", "three"],
        "fan": ["split", "square", "square", "square", "square", "join"],
        "ask": ["ask", "greet"],
        "flaky": ["flaky"],
        "limited": ["work"],
    }[kind]


def retrying(cluster: Cluster, k: int, call: Any) -> httpx.Response:
    """``call(url)`` on live replicas, from the k-th, until one answers (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return call(cluster.pick(k))  # type: ignore[no-any-return]
        except httpx.TransportError:
            assert time.monotonic() < deadline, "no replica answered for 60 s"
            k += 1
            time.sleep(0.1)


def start_run(cluster: Cluster, k: int, run_id: str, kind: str, x: int) -> None:
    def call(url: str) -> httpx.Response:
        return httpx.post(
            f"{url}/workflows/{kind}/run-nowait",
            json={"handler_id": run_id, "start_event": {"x": x}},
            timeout=30,
        )

    response = retrying(cluster, k, call)
    # 409: the request reached a replica that died before answering, but the run exists.
    assert response.status_code in {200, 409}, response.text


def answer_run(cluster: Cluster, k: int, run_id: str, x: int) -> None:
    event = {"type": "HumanResponseEvent", "value": {"response": f"name{x}"}}

    def call(url: str) -> httpx.Response:
        return httpx.post(f"{url}/events/{run_id}", json={"event": event}, timeout=30)

    response = retrying(cluster, k, call)
    assert response.status_code == 200, response.text


def subscribe(cluster: Cluster, k: int, run_id: str, seen: list[int], types: list[str]) -> None:
    """Follow run ``run_id``'s stream to its end, reconnecting to another replica with
    ``Last-Event-ID`` when the one it reads from goes away."""
    deadline = time.monotonic() + 150
    last = -1
    while time.monotonic() < deadline:
        url = cluster.pick(k)
        k += 1
        headers = {"Last-Event-ID": str(last)} if last >= 0 else {}
        params = {} if last >= 0 else {"after_sequence": "-1"}
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(30, read=60)) as client,
                client.stream(
                    "GET", f"{url}/events/{run_id}", headers=headers, params=params
                ) as response,
            ):
                if response.status_code != 200:
                    time.sleep(0.2)
                    continue
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        key, _, value = line.partition(": ")
                        fields[key] = value
                        continue
                    if "id" in fields and "data" in fields:
                        last = int(fields["id"])
                        seen.append(last)
                        types.append(fields.get("event", ""))
                        if fields.get("event") == "StopEvent":
                            return
                    fields = {}
            if types and types[-1] == "StopEvent":
                return
        except (httpx.TransportError, httpx.RemoteProtocolError):
            time.sleep(0.1)
    pytest.fail(f"the subscriber of {run_id} did not see its end: {seen}")


def outcome(cluster: Cluster, k: int, run_id: str) -> dict[str, Any]:
    """``GET /results/{run_id}`` from live replicas until the run has ended (bounded)."""
    deadline = time.monotonic() + 150
    while True:
        response = retrying(
            cluster, k, lambda url: httpx.get(f"{url}/results/{run_id}", timeout=30)
        )
        if response.status_code not in {202, 404}:
            found: dict[str, Any] = response.json()
            return found
        assert time.monotonic() < deadline, f"{run_id} did not end: {response.text}"
        time.sleep(0.2)


def spans_by_run(directory: Path) -> dict[str, set[str]]:
    """Each run's trace ids, from every replica's trace files (a killed one's last line
    may be cut short)."""
    traces: dict[str, set[str]] = defaultdict(set)
    for path in directory.glob("telemetry-*/traces*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                batch = json.loads(line)
            except ValueError:
                continue
            for rs in batch["resourceSpans"]:
                for ss in rs["scopeSpans"]:
                    for span in ss["spans"]:
                        for kv in span.get("attributes", []):
                            if kv["key"] == "stepstream.run_id":
                                traces[kv["value"]["stringValue"]].add(span["traceId"])
    return traces


Plan = list[tuple[str, str, int]]  # run id, kind, x
Seen = dict[str, tuple[list[int], list[str]]]  # run id -> the seqs and types it streamed


def drive(cluster: Cluster, plan: Plan, seen: Seen) -> list[tuple[Any, dict[str, Any]]]:
    """Start the runs round-robin, kill a and restart c on the way, answer, wait."""
    with ThreadPoolExecutor(max_workers=8) as pool, ThreadPoolExecutor(SUBSCRIBED) as readers:
        followers = []
        for n, (run_id, kind, x) in enumerate(plan):
            pool.submit(start_run, cluster, n, run_id, kind, x).result()
            if run_id in seen:
                followers.append(readers.submit(subscribe, cluster, n + 1, run_id, *seen[run_id]))
            if n == RUNS // 3:
                cluster.replicas["a"].proc.kill()  # SIGKILL: no shutdown of any kind
                cluster.gone[str(cluster.replicas["a"].proc.pid)] = time.time()
            if n == 2 * RUNS // 3:
                cluster.replicas["c"].stop()
                cluster.gone[str(cluster.replicas["c"].proc.pid)] = time.time()
                cluster.start("c")  # the same instance id: its runs resume there
        # The questions are answered once every run started: those the killed replica
        # asked are answered after their take-over, through other replicas.
        answers = [
            pool.submit(answer_run, cluster, n + 1, run_id, x)
            for n, (run_id, kind, x) in enumerate(plan)
            if kind == "ask"
        ]
        for sent in answers:
            sent.result(timeout=60)
        results = list(pool.map(lambda p: (p, outcome(cluster, p[2], p[0])), plan))
        for follower in followers:
            follower.result(timeout=150)
    return results


def check_effects(cluster: Cluster, plan: Plan) -> None:
    """Each completed step's effect once, but re-runs of steps in flight in a replica
    that died or stopped; every step of every run completed."""
    by_key: dict[str, list[list[str]]] = defaultdict(list)
    for line in (cluster.directory / "effects.txt").read_text().splitlines():
        fields = line.split("|")
        if fields[0] == "done":
            by_key[fields[3]].append(fields)
    for key, lines in by_key.items():
        assert {f[4] for f in lines[:-1]} <= set(cluster.gone), (key, lines)
    steps: dict[str, list[str]] = defaultdict(list)
    for key, lines in by_key.items():
        steps[key.partition(":")[0]].append(lines[-1][2])
    for run_id, kind, _ in plan:
        assert sorted(steps[run_id]) == sorted(steps_of(kind)), (run_id, steps[run_id])


def check_failover(cluster: Cluster) -> float:
    """The killed replica's runs were taken over: how long after the kill."""
    taken = [line for s in cluster.every for line in logged(s, "run_failed_over")]
    assert {line["from_instance"] for line in taken} <= {"a", "c"}
    killed_at = min(cluster.gone.values())
    moved = [datetime.fromisoformat(t["timestamp"]) for t in taken if t["from_instance"] == "a"]
    assert moved, "the killed replica's runs were not taken over"
    return min(moved).timestamp() - killed_at


def test_three_replicas_finish_300_runs_through_a_kill_and_a_restart(cluster: Cluster) -> None:
    plan = [(f"r{n}", KINDS[n % len(KINDS)], n) for n in range(RUNS)]
    subscribed = [plan[n] for n in range(0, RUNS, RUNS // SUBSCRIBED)][:SUBSCRIBED]
    seen: Seen = {r: ([], []) for r, _, _ in subscribed}
    for (run_id, kind, x), found in drive(cluster, plan, seen):
        assert found.get("status") == "completed", (run_id, found)
        assert found["result"] == expected(kind, x), (run_id, found)
    check_effects(cluster, plan)
    for run_id, (seqs, types) in seen.items():
        assert seqs == list(range(len(seqs))), (run_id, seqs)
        assert types[-1] == "StopEvent", (run_id, types)
    traces = spans_by_run(cluster.directory)
    assert all(len(traces[run_id]) == 1 for run_id, _, _ in plan if run_id in traces)
    assert len(traces) >= RUNS // 2  # most runs' spans are in the files
    assert overlap(cluster.directory, cluster.gone) <= 2
    failover = check_failover(cluster)
    assert failover < LEASE + LEASE / 3 + 2, failover  # the lease, a renewal, some slack
    print(f"failover: the runs of a taken over {failover:.2f} s after the kill")  # noqa: T201
