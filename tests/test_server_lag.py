"""The optional loop-lag probe: off by default, and when on it sees a loop that was held."""

import asyncio
import time

import httpx
import pytest

from _live_server import serve_in_thread
from _served_app import AskingWorkflow
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


@pytest.mark.asyncio
async def test_one_request_slot_still_serves_a_waiting_run_and_its_stream() -> None:
    """With max_active_requests=1, a /run waiting for a human and a stream of that run
    give their slot back: the answer (another request) gets through and the run ends."""
    server = WorkflowServer({"asking": AskingWorkflow(timeout=20)}, max_active_requests=1)
    with serve_in_thread(server) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            body = {"start_event": {}, "handler_id": "h1"}
            run = asyncio.ensure_future(client.post("/workflows/asking/run", json=body))
            for _ in range(200):  # bounded: until the run exists (10 s at most)
                if (await client.get("/handlers/h1")).status_code == 202:
                    break
                await asyncio.sleep(0.05)
            params = {"after_sequence": "-1"}
            async with client.stream("GET", "/events/h1", params=params) as stream:
                answer = {"type": "HumanResponseEvent", "value": {"response": "ann"}}
                sent = await client.post("/events/h1", json={"event": answer})
                assert sent.status_code == 200
                kinds = [line async for line in stream.aiter_lines() if line.startswith("event:")]
            ran = await run
    assert ran.status_code == 200
    assert ran.json()["result"]["value"]["result"] == "hello ann"
    assert kinds == ["event: InputRequiredEvent", "event: StopEvent"]
