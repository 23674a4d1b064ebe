"""``GET /handlers/{id}/steps``: each run's step lifecycle as frames, resumable like events."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from _live_server import serve_in_thread
from _served_app import AskingWorkflow
from _served_app import CountingWorkflow
from _served_app import CrashingWorkflow
from _served_app import GreetingWorkflow
from stepstream.server import WorkflowServer


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A server with the test workflows, for the module."""
    server = WorkflowServer(
        {
            "greeting": GreetingWorkflow(timeout=20),
            "counting": CountingWorkflow(timeout=60),
            "asking": AskingWorkflow(timeout=30),
            "crashing": CrashingWorkflow(timeout=20),
        }
    )
    with serve_in_thread(server) as base:
        yield base


def frames(text: str) -> list[dict[str, Any]]:
    """The SSE frames of a body: ``id``, ``event`` and the parsed ``data``."""
    out = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            out.append({**fields, "data": json.loads(fields["data"])})
    return out


async def run_to_end(http: httpx.AsyncClient, workflow: str, **fields: Any) -> str:
    response = await http.post(f"/workflows/{workflow}/run", json={"start_event": fields})
    handler_id: str = response.json()["handler_id"]
    return handler_id


@pytest.mark.asyncio
async def test_step_frames_of_a_finished_run(url: str) -> None:
    """Each step attempt has a running and an ok frame, in order, then the run's end."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await run_to_end(http, "greeting", greeting="hi", name="ann")
        response = await http.get(f"/handlers/{hid}/steps")
    assert response.headers["content-type"].startswith("text/event-stream")
    got = frames(response.text)
    assert [f["id"] for f in got] == [str(i) for i in range(len(got))]
    assert {f["event"] for f in got} == {"StepStateChanged"}
    values = [f["data"]["value"] for f in got]
    assert [(v["step"], v["state"]) for v in values] == [
        ("first_step", "running"),
        ("first_step", "ok"),
        ("second_step", "running"),
        ("second_step", "ok"),
        (None, "run_ok"),
    ]
    first_ok = values[1]
    assert first_ok["emitted"] == "GreetEvent"
    assert first_ok["streamed"] == 1
    assert 0 <= first_ok["start_ms"] <= first_ok["at_ms"]


@pytest.mark.asyncio
async def test_step_frames_resume_after_any_id(url: str) -> None:
    """Last-Event-ID N answers the frames after N: no gap, no duplicate; after the last, 204."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await run_to_end(http, "greeting", greeting="hi", name="ann")
        whole = frames((await http.get(f"/handlers/{hid}/steps")).text)
        for last in range(len(whole) - 1):
            rest = await http.get(f"/handlers/{hid}/steps", headers={"Last-Event-ID": str(last)})
            assert frames(rest.text) == whole[last + 1 :]
        end = await http.get(f"/handlers/{hid}/steps", params={"after_sequence": len(whole) - 1})
        assert end.status_code == 204


@pytest.mark.asyncio
async def test_failed_step_and_waiting_step_frames(url: str) -> None:
    """A failing step's frame carries its error; a step in wait_for_event is ``waiting``."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await run_to_end(http, "crashing")
        body = (await http.get(f"/handlers/{hid}/steps")).text
        crashed = [f["data"]["value"] for f in frames(body)]
        assert crashed[1]["state"] == "error"
        assert crashed[1]["error"] == "ValueError: Workflow crashed intentionally"
        assert crashed[-1]["state"] == "run_error"

        started = await http.post("/workflows/asking/run-nowait", json={})
        hid = started.json()["handler_id"]
        seen: list[dict[str, Any]] = []
        async with http.stream("GET", f"/handlers/{hid}/steps") as live:
            buffer = ""
            async for chunk in live.aiter_text():
                buffer += chunk
                seen = [f["data"]["value"] for f in frames(buffer)]
                if seen and seen[-1]["state"] == "waiting":
                    break
        assert seen[-1]["waiting_for"] == "HumanResponseEvent"
        answer = {"event": {"type": "HumanResponseEvent", "value": {"response": "bo"}}}
        assert (await http.post(f"/events/{hid}", json=answer)).status_code == 200
        async with asyncio.timeout(20):
            while (await http.get(f"/handlers/{hid}")).status_code == 202:  # noqa: ASYNC110 - over HTTP
                await asyncio.sleep(0.02)
        rest = frames((await http.get(f"/handlers/{hid}/steps")).text)
    states = [f["data"]["value"]["state"] for f in rest]
    assert states == ["running", "waiting", "running", "ok", "run_ok"]
    assert rest[2]["data"]["value"]["resumed_by"] == "HumanResponseEvent"
