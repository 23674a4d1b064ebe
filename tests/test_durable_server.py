"""``stepstream serve --durable``: real server processes killed with SIGKILL and restarted.

The served workflows are tests/_durable_served_app.py. Every check goes over HTTP, with
httpx or with the peer's published client (llama-agents-client).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from _live_server import TESTS_DIR
from _live_server import ServeProcess

pytest.importorskip("dbos")

APP = TESTS_DIR / "_durable_served_app.py"


def serve(directory: Path, *args: str) -> ServeProcess:
    """``stepstream serve --durable`` on the app, in ``directory`` (its database there)."""
    return ServeProcess(APP, "--durable", *args, cwd=directory)


def kill(server: ServeProcess) -> None:
    """SIGKILL: no shutdown of any kind."""
    server.proc.kill()
    server.proc.wait(timeout=10)
    server.stop()


@dataclass
class Frame:
    """One SSE frame: its id (the seq), type and data."""

    seq: int | None
    type: str
    data: dict[str, Any]


def frames(
    url: str,
    handler_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    until: Callable[[list[Frame]], bool] = lambda _: False,
    timeout: float = 30,
) -> list[Frame]:
    """The SSE frames of ``GET /events/{handler_id}``, until the stream ends or ``until``."""
    found: list[Frame] = []
    deadline = time.monotonic() + timeout
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream(
            "GET", f"{url}/events/{handler_id}", headers=headers or {}, params=params or {}
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            assert time.monotonic() < deadline, f"stream not done in {timeout}s: {found}"
            if line.startswith(":"):
                continue
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "data" in fields:
                seq = int(fields["id"]) if "id" in fields else None
                found.append(Frame(seq, fields.get("event", ""), json.loads(fields["data"])))
                if until(found):
                    break
            fields = {}
    return found


def labels(found: list[Frame]) -> list[str]:
    """Each frame's label (its type for other events)."""
    return [f.data["value"].get("label", f.type) if f.type == "Label" else f.type for f in found]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``check`` until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def effects(directory: Path) -> list[str]:
    """The steps' recorded side effects: their names."""
    path = directory / "effects.txt"
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.split("|")[0] for line in lines]


def start(url: str, workflow: str, handler_id: str, **fields: Any) -> dict[str, Any]:
    """``POST /workflows/{workflow}/run-nowait``: the handler."""
    response = httpx.post(
        f"{url}/workflows/{workflow}/run-nowait",
        json={"handler_id": handler_id, "start_event": fields},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def answer(url: str, handler_id: str, name: str) -> httpx.Response:
    """``POST /events/{handler_id}`` with a HumanResponseEvent."""
    event = {"type": "HumanResponseEvent", "value": {"response": name}}
    return httpx.post(f"{url}/events/{handler_id}", json={"event": event}, timeout=60)


def result(url: str, handler_id: str, timeout: float = 60) -> dict[str, Any]:
    """``GET /results/{handler_id}`` once the run has ended."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/results/{handler_id}", timeout=30)
        if response.status_code != 202:
            found: dict[str, Any] = response.json()
            return found
        assert time.monotonic() < deadline, f"{handler_id} did not end: {response.json()}"
        time.sleep(0.1)


@dataclass
class Restart:
    """What the kill-and-restart fixture saw: the directory, the streams, the second server."""

    directory: Path
    before: list[Frame]
    server: ServeProcess


@pytest.fixture(scope="module")
def restarted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restart]:
    """A server with a chain in step two, a question asked and a greeting done, killed
    with SIGKILL, then started again on the same database."""
    directory = tmp_path_factory.mktemp("durable-serve")
    first = serve(directory)
    try:
        start(first.url, "chain", "c1", x=4)
        before = frames(
            first.url, "c1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 3
        )
        start(first.url, "asking", "a1")
        frames(first.url, "a1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
        done = httpx.post(
            f"{first.url}/workflows/greeting/run",
            json={"handler_id": "g1", "start_event": {"name": "ada"}},
            timeout=30,
        )
        assert done.status_code == 200, done.text
    finally:
        kill(first)
    second = serve(directory)
    try:
        yield Restart(directory, before, second)
    finally:
        second.stop()


def test_the_handlers_of_every_run_are_listed_after_the_restart(restarted: Restart) -> None:
    """GET /handlers lists the runs of the killed server: the finished one with its result."""
    url = restarted.server.url
    listed = {
        h["handler_id"]: h for h in httpx.get(f"{url}/handlers", timeout=30).json()["handlers"]
    }
    assert {"c1", "a1", "g1"} <= set(listed)
    assert listed["g1"]["status"] == "completed"
    assert listed["g1"]["result"]["value"]["result"] == "hi ada"
    assert listed["g1"]["workflow_name"] == "greeting"
    assert listed["c1"]["status"] == "running"
    assert listed["a1"]["status"] == "running"
    assert listed["c1"]["trace_id"] is not None
    ended = httpx.get(f"{url}/results/g1", timeout=30)
    assert ended.status_code == 200
    assert ended.json()["result"] == "hi ada"
    running = httpx.get(f"{url}/handlers", params={"status": "completed"}, timeout=30).json()
    assert [h["handler_id"] for h in running["handlers"]] == ["g1"]


def test_a_stream_resumed_after_the_restart_has_no_gap_and_no_duplicate(restarted: Restart) -> None:
    """Last-Event-ID after the restart: every later seq once, in order, to the end; the
    run's result is an uninterrupted run's."""
    url = restarted.server.url
    before = restarted.before
    assert [f.seq for f in before] == [0, 1, 2]
    assert labels(before) == ["one:0", "one:1", "two:0"]
    (restarted.directory / "gate").touch()
    after = frames(url, "c1", headers={"Last-Event-ID": "2"})
    seqs = [f.seq for f in after]
    assert seqs == list(range(3, 3 + len(after)))
    # two:0 again: step two was in flight at the kill and ran again (at least once).
    assert labels(after) == ["two:0", "two:1", "three:0", "StopEvent"]
    assert result(url, "c1")["result"] == {"total": 52}
    assert effects(restarted.directory).count("one") == 1  # completed: never again
    # The whole stream, read again with after_sequence as NDJSON, is the same.
    again = httpx.get(
        f"{url}/events/c1", params={"after_sequence": "-1", "sse": "false"}, timeout=30
    )
    lines = [json.loads(line) for line in again.text.splitlines()]
    assert [line["seq"] for line in lines] == list(range(7))
    # An uninterrupted run of the same chain ends the same way.
    start(url, "chain", "c2", x=4)
    assert result(url, "c2")["result"] == {"total": 52}
    # The resumed run's step frames, from the resume on.
    steps = httpx.get(f"{url}/handlers/c1/steps", params={"sse": "false"}, timeout=30)
    states = [
        (f["value"]["step"], f["value"]["state"]) for f in map(json.loads, steps.text.splitlines())
    ]
    assert states[0] == ("two", "running")
    assert states[-1] == (None, "run_ok")


def test_an_answer_posted_after_the_restart_reaches_the_resumed_run(restarted: Restart) -> None:
    """The question asked before the kill is answered after it: the resumed run takes it."""
    url = restarted.server.url
    (restarted.directory / "gate-ask").touch()
    response = answer(url, "a1", "ada")
    assert response.status_code == 200, response.text
    assert result(url, "a1")["result"] == "hello ada"
    assert "answered:ada" in effects(restarted.directory)


def test_an_acknowledged_answer_survives_a_kill_before_its_step_ends(tmp_path: Path) -> None:
    """kill -9 after POST /events answered 2xx, while the answered step still works: after
    the restart the run ends with that answer, which is not sent again."""
    first = serve(tmp_path)
    try:
        start(first.url, "asking", "q1")
        frames(first.url, "q1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
        assert answer(first.url, "q1", "bo").status_code == 200
        wait_for(lambda: "answered:bo" in effects(tmp_path), "the answered step")
    finally:
        kill(first)
    second = serve(tmp_path)
    try:
        (tmp_path / "gate-ask").touch()
        assert result(second.url, "q1")["result"] == "hello bo"
    finally:
        second.stop()


def test_an_answer_posted_as_the_server_restarts_is_not_lost(tmp_path: Path) -> None:
    """The answer comes while the restarted server is still taking the run up: it reaches
    the run (through its inbox), once."""
    (tmp_path / "gate-ask").touch()
    first = serve(tmp_path)
    try:
        start(first.url, "asking", "r1")
        frames(first.url, "r1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
    finally:
        kill(first)
    second = serve(tmp_path)
    try:
        assert answer(second.url, "r1", "ed").status_code == 200
        assert result(second.url, "r1")["result"] == "hello ed"
        assert effects(tmp_path).count("answered:ed") == 1
    finally:
        second.stop()


def test_a_parked_run_is_reloaded_by_an_answer_posted_to_another_process(tmp_path: Path) -> None:
    """--idle-release-after: the waiting run is released; the server stops; a new server on
    the same database takes the answer and the run ends there, its stream whole."""
    (tmp_path / "gate-ask").touch()
    first = serve(tmp_path, "--idle-release-after", "0.3")
    try:
        start(first.url, "asking", "p1")
        frames(first.url, "p1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
        wait_for(lambda: any('"run_parked"' in line for line in first.lines), "the release")
        listed = httpx.get(f"{first.url}/handlers/p1", timeout=30)
        assert listed.status_code == 202  # still running, as far as clients can tell
    finally:
        assert first.stop(signal.SIGTERM) == 0
    second = serve(tmp_path, "--idle-release-after", "0.3")
    try:
        assert answer(second.url, "p1", "cy").status_code == 200
        assert result(second.url, "p1")["result"] == "hello cy"
        whole = frames(second.url, "p1", params={"after_sequence": "-1"})
        assert [(f.seq, f.type) for f in whole] == [(0, "InputRequiredEvent"), (1, "StopEvent")]
    finally:
        second.stop()


@pytest.mark.asyncio
async def test_the_peers_client_follows_a_durable_run_across_a_restart(tmp_path: Path) -> None:
    """llama-agents-client: start, stream, and after a SIGKILL and a restart, send the
    answer, read the stream after the last seq seen and get the result."""
    from llama_agents.client import WorkflowClient  # noqa: PLC0415 - the peer's client
    from workflows.events import HumanResponseEvent as LlamaHumanResponse  # noqa: PLC0415

    (tmp_path / "gate-ask").touch()
    first = serve(tmp_path)
    try:
        client = WorkflowClient(base_url=first.url)
        handler = await client.run_workflow_nowait("asking", handler_id="k1")
        async with asyncio.timeout(20):
            async for ev in client.get_workflow_events(handler.handler_id):
                assert ev.type == "InputRequiredEvent"
                break
    finally:
        kill(first)
    second = serve(tmp_path)
    try:
        client = WorkflowClient(base_url=second.url)
        assert (await client.get_handler("k1")).status == "running"
        await client.send_event("k1", LlamaHumanResponse(response="di"))
        async with asyncio.timeout(30):
            seen = [ev.type async for ev in client.get_workflow_events("k1", after_sequence=0)]
        assert seen == ["StopEvent"]
        ended = (await client.get_result("k1")).result
        assert ended is not None
        assert ended.value == {"result": "hello di"}
    finally:
        second.stop()


def test_two_servers_on_postgres_share_their_runs(tmp_path: Path, postgres: Any) -> None:
    """Two live servers on one Postgres database: a run parked by the first is answered
    through the second; either one reloads it, and both answer for it."""
    (tmp_path / "gate-ask").touch()
    url = f"--durable={postgres.url}"
    first = serve(tmp_path, url, "--idle-release-after", "0.3", "--instance-id", "one")
    second = None
    try:
        second = serve(tmp_path, url, "--idle-release-after", "0.3", "--instance-id", "two")
        start(first.url, "asking", "pg1")
        frames(first.url, "pg1", params={"after_sequence": "-1"}, until=lambda f: len(f) == 1)
        wait_for(lambda: any('"run_parked"' in line for line in first.lines), "the release")
        listed = httpx.get(f"{second.url}/handlers", params={"status": "running"}, timeout=30)
        assert "pg1" in [h["handler_id"] for h in listed.json()["handlers"]]
        assert answer(second.url, "pg1", "fay").status_code == 200
        assert result(second.url, "pg1")["result"] == "hello fay"
        assert result(first.url, "pg1")["result"] == "hello fay"
        whole = frames(first.url, "pg1", params={"after_sequence": "-1"})
        assert [(f.seq, f.type) for f in whole] == [(0, "InputRequiredEvent"), (1, "StopEvent")]
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_a_database_that_cannot_be_opened_ends_serve_with_a_plain_error(tmp_path: Path) -> None:
    """`stepstream serve --durable=sqlite:///<not a database>` exits 2 with a plain `error:`
    line naming the file and what to do (beside uvicorn's JSON line of the traceback)."""
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database" * 200)
    done = subprocess.run(
        [sys.executable, "-m", "stepstream", "serve", f"--durable=sqlite:///{bad}", str(APP),
         "--port", "0", "--telemetry-dir", str(tmp_path / "telemetry")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    [plain] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert plain.startswith(f"error: the durable database {bad} cannot be opened ("), plain
    assert "it is not a SQLite database or it is damaged" in plain
