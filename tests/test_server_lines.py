"""``stepstream serve``'s own log lines: written in batches, none lost at a clean shutdown,
user text escaped; and the garbage-collector tuning that serving can ask for."""

import gc
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _live_server import serve_in_thread
from _live_server import serve_process
from _served_app import GreetingWorkflow
from stepstream.server import WorkflowServer

RUNS = 40

_APP = """
from stepstream import StartEvent, StopEvent, Workflow, step


class Shouting(Workflow):
    @step
    async def shout(self, ev: StartEvent) -> StopEvent:
        raise ValueError("\\x1b[31mred\\x1b[0m caf\\u00e9")


shouting = Shouting(timeout=10)
"""


def _lines(raw: list[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in raw if line.startswith("{")]


def test_a_clean_shutdown_writes_every_line(tmp_path: Path) -> None:
    """Lines are written in batches, yet each request's lines are all there once the
    server stops (SIGINT) right after its last answer."""
    with serve_process(cwd=tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            for _ in range(RUNS):
                body = {"start_event": {"greeting": "hi", "name": "ann"}}
                answer = client.post("/workflows/greeting/run", json=body)
                assert answer.status_code == 200
        server.stop()
        lines = _lines(list(server.lines))
    requests = [x for x in lines if x["event"] == "http_request"]
    assert len(requests) == RUNS
    for event in ("run_started", "run_finished"):
        found = [x for x in lines if x["event"] == event]
        assert len(found) == RUNS
        assert all(len(str(x["trace_id"])) == 32 and x["handler_id"] for x in found)
    assert {x["route"] for x in requests} == {"/workflows/{name}/run"}


def test_user_text_in_a_line_is_escaped(tmp_path: Path) -> None:
    """An error's control characters and non-ASCII letters are JSON escapes in the line,
    and read back as the error's own text."""
    app = tmp_path / "shouting.py"
    app.write_text(_APP, encoding="utf-8")
    with serve_process(target=app, cwd=tmp_path) as server:
        answer = httpx.post(f"{server.url}/workflows/shouting/run", json={}, timeout=20)
        assert answer.status_code == 500
        server.stop()
        raw = [line for line in server.lines if '"run_finished"' in line]
    assert len(raw) == 1
    assert raw[0].isascii()
    assert "\x1b" not in raw[0]
    assert json.loads(raw[0])["error"] == "ValueError: \x1b[31mred\x1b[0m café"


@pytest.fixture
def gc_settings() -> Iterator[None]:
    """Put the collector and the switch interval back as they were (process-wide)."""
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("gc_settings")
def test_serving_with_tune_process_freezes_start_up_objects() -> None:
    """serve(tune_process=True) freezes what exists once started, raises the GC
    thresholds and shortens the GIL switch interval; the server still answers."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    server = WorkflowServer({"greeting": GreetingWorkflow(timeout=20)})
    with serve_in_thread(server, tune_process=True) as base:
        assert httpx.get(f"{base}/health").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] > 700
        assert sys.getswitchinterval() < 0.005


@pytest.mark.usefixtures("gc_settings")
def test_serving_leaves_the_collector_alone_by_default() -> None:
    """Without tune_process (a server mounted in an application) nothing is changed."""
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    server = WorkflowServer({"greeting": GreetingWorkflow(timeout=20)})
    with serve_in_thread(server) as base:
        assert httpx.get(f"{base}/health").status_code == 200
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == (700, 10, 10)
        assert sys.getswitchinterval() == 0.005
