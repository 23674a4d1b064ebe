"""The optional loop-lag probe: off by default, and when on it sees a loop that was held."""

import time

import httpx

from _live_server import serve_in_thread
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step
from stepstream.server import WorkflowServer


class HoldsTheLoop(Workflow):
    """A badly written step: blocks the event loop for 0.2 s."""

    @step
    async def block(self, ev: StartEvent) -> StopEvent:
        time.sleep(0.2)  # noqa: ASYNC251 - the point of the test
        return StopEvent(result="done")


def test_the_probe_is_off_by_default() -> None:
    with serve_in_thread(WorkflowServer({"hold": HoldsTheLoop(timeout=10)})) as base:
        assert httpx.get(f"{base}/debug/loop-lag").status_code == 404


def test_the_probe_reports_a_held_loop() -> None:
    server = WorkflowServer({"hold": HoldsTheLoop(timeout=10)}, loop_lag_probe=True)
    with serve_in_thread(server) as base:
        httpx.get(f"{base}/debug/loop-lag", params={"reset": "true"})
        ran = httpx.post(f"{base}/workflows/hold/run", json={"start_event": {}}, timeout=10)
        assert ran.status_code == 200
        held = httpx.get(f"{base}/debug/loop-lag", params={"reset": "true"}).json()
        # The probe's timer could not fire while the step held the loop for 0.2 s.
        assert held["samples"] > 0
        assert held["max_ms"] >= 150
        assert held["p99_ms"] <= held["max_ms"]
