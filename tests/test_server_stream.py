"""Event streams over HTTP: ids and types on every frame, resume, many subscribers, bounds."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from _live_server import serve_in_thread
from _served_app import CountingWorkflow
from _served_app import SleepingWorkflow
from stepstream.server import WorkflowServer


def make_server(**options: Any) -> WorkflowServer:
    return WorkflowServer(
        {"counting": CountingWorkflow(timeout=60), "sleeping": SleepingWorkflow(timeout=90)},
        **options,
    )


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    """A server with the default settings, for the module."""
    with serve_in_thread(make_server()) as base:
        yield base


def parse_sse(text: str) -> list[dict[str, str]]:
    """The frames of an SSE body: each a dict of its fields (comments as ``comment``)."""
    frames = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields["comment" if name == "" else name] = value
        frames.append(fields)
    return frames


async def start(http: httpx.AsyncClient, name: str, **fields: Any) -> str:
    response = await http.post(f"/workflows/{name}/run-nowait", json={"start_event": fields})
    assert response.status_code == 200, response.text
    handler_id: str = response.json()["handler_id"]
    return handler_id


async def finished(http: httpx.AsyncClient, handler_id: str) -> None:
    """Wait (at most 20 s) until the handler is no longer running."""
    async with asyncio.timeout(20):
        while (await http.get(f"/handlers/{handler_id}")).status_code == 202:  # noqa: ASYNC110 - over HTTP
            await asyncio.sleep(0.02)


@pytest.mark.asyncio
async def test_sse_frames_carry_seq_and_type_ndjson_lines_seq(url: str) -> None:
    """Every SSE frame has id (0, 1, ...) and event (the type); every NDJSON line has seq."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await start(http, "counting", n=5)
        await finished(http, hid)
        sse = await http.get(f"/events/{hid}", params={"after_sequence": -1})
        assert sse.headers["content-type"].startswith("text/event-stream")
        frames = parse_sse(sse.text)
        assert [f["id"] for f in frames] == ["0", "1", "2", "3", "4", "5"]
        assert [f["event"] for f in frames] == ["Tick"] * 5 + ["StopEvent"]
        assert [json.loads(f["data"])["type"] for f in frames] == [f["event"] for f in frames]
        nd = await http.get(f"/events/{hid}", params={"after_sequence": -1, "sse": "false"})
        assert nd.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in nd.text.splitlines()]
        assert [line["seq"] for line in lines] == list(range(6))
        assert lines[2]["value"] == {"i": 2}
        assert lines[2]["qualified_name"] == "_served_app.Tick"


@pytest.mark.asyncio
async def test_resume_from_every_position_of_a_finished_run(url: str) -> None:
    """Last-Event-ID k (or after_sequence k) gives exactly the events after k; the end, 204."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await start(http, "counting", n=8)
        await finished(http, hid)
        full = parse_sse((await http.get(f"/events/{hid}", params={"after_sequence": -1})).text)
        assert len(full) == 9
        for k in range(-1, 8):
            by_header = await http.get(f"/events/{hid}", headers={"Last-Event-ID": str(k)})
            assert parse_sse(by_header.text) == full[k + 1 :], k
            by_param = await http.get(
                f"/events/{hid}", params={"after_sequence": k, "sse": "false"}
            )
            assert [json.loads(x)["seq"] for x in by_param.text.splitlines()] == list(
                range(k + 1, 9)
            )
        ended = await http.get(f"/events/{hid}", headers={"Last-Event-ID": "8"})
        assert ended.status_code == 204


@pytest.mark.asyncio
async def test_resume_a_live_run_after_each_disconnect(url: str) -> None:
    """Read two frames, hang up, resume with Last-Event-ID, again and again: nothing lost."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        hid = await start(http, "counting", n=30, delay=0.01)
        seen: list[dict[str, str]] = []
        last = "-1"
        for _ in range(60):  # bounded: at most 60 reconnections
            async with http.stream(
                "GET", f"/events/{hid}", headers={"Last-Event-ID": last}
            ) as response:
                if response.status_code == 204:
                    break
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    if buffer.count("\n\n") >= 2:  # two frames, then hang up
                        break
            frames = parse_sse(buffer[: buffer.rindex("\n\n") + 2])
            seen.extend(frames)
            last = frames[-1]["id"]
        assert [int(f["id"]) for f in seen] == list(range(31))
        assert seen[-1]["event"] == "StopEvent"


@pytest.mark.asyncio
async def test_a_hundred_subscribers_see_the_same_sequence(url: str) -> None:
    """100 concurrent subscribers of one live run each get every event, in the same order."""
    limits = httpx.Limits(max_connections=120)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        hid = await start(http, "counting", n=200, delay=0.002)

        async def subscribe() -> list[tuple[str, str, str]]:
            response = await http.get(f"/events/{hid}", params={"after_sequence": -1})
            return [(f["id"], f["event"], f["data"]) for f in parse_sse(response.text)]

        async with asyncio.timeout(60):
            results = await asyncio.gather(*(subscribe() for _ in range(100)))
    assert [int(i) for i, _, _ in results[0]] == list(range(201))
    assert all(r == results[0] for r in results)


FORMS = [  # (sse, include_qualified_name): every form a subscriber may ask for
    ("true", "true"),
    ("true", "false"),
    ("false", "true"),
    ("false", "false"),
]


@pytest.mark.asyncio
async def test_live_subscribers_of_every_form_get_their_own_frames(url: str) -> None:
    """Subscribers of one live run in all four forms at once (frames are shared per form)
    each get their form's frames, byte for byte what a replay of the finished run gives."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        hid = await start(http, "counting", n=60, delay=0.002)

        async def body(sse: str, qualified: str) -> bytes:
            params = {"after_sequence": "-1", "sse": sse, "include_qualified_name": qualified}
            return (await http.get(f"/events/{hid}", params=params)).content

        async with asyncio.timeout(30):
            live = await asyncio.gather(*(body(*form) for form in FORMS for _ in range(3)))
        await finished(http, hid)
        replays = [await body(*form) for form in FORMS]
    for index, form in enumerate(FORMS):
        assert live[3 * index : 3 * index + 3] == [replays[index]] * 3, form
    sse, sse_unqualified, nd, nd_unqualified = replays
    assert [f["id"] for f in parse_sse(sse.decode())] == [str(i) for i in range(61)]
    data = [json.loads(f["data"]) for f in parse_sse(sse_unqualified.decode())]
    assert {d["qualified_name"] for d in data} == {None}
    lines = [json.loads(line) for line in nd.splitlines()]
    assert [line["seq"] for line in lines] == list(range(61))
    assert lines[1]["qualified_name"] == "_served_app.Tick"
    assert {json.loads(line)["qualified_name"] for line in nd_unqualified.splitlines()} == {None}


@pytest.mark.asyncio
async def test_after_sequence_now_skips_history() -> None:
    """after_sequence=now (the default) streams only what comes after the request."""
    with serve_in_thread(make_server()) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            hid = await start(http, "counting", n=3)
            await finished(http, hid)
            assert (await http.get(f"/events/{hid}")).status_code == 204
            sleeper = await start(http, "sleeping")
            await asyncio.sleep(0.2)  # its Tick is written
            async with http.stream("GET", f"/events/{sleeper}") as response:
                await http.post(f"/handlers/{sleeper}/cancel")
                body = (await response.aread()).decode()
            assert [f["event"] for f in parse_sse(body)] == ["WorkflowCancelledEvent"]


@pytest.mark.asyncio
async def test_idle_streams_get_heartbeats() -> None:
    """An SSE stream with nothing to send gets a heartbeat comment every `heartbeat` seconds."""
    with serve_in_thread(make_server(heartbeat=0.1)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            hid = await start(http, "sleeping")
            buffer = ""
            async with http.stream("GET", f"/events/{hid}", params={"after_sequence": -1}) as r:
                async with asyncio.timeout(10):
                    async for text in r.aiter_text():
                        buffer += text
                        if buffer.count(": heartbeat") >= 2:
                            break
            await http.post(f"/handlers/{hid}/cancel")
    frames = parse_sse(buffer)
    assert frames[0]["event"] == "Tick"
    assert frames[1] == {"comment": "heartbeat"}


@pytest.mark.asyncio
async def test_a_subscriber_behind_the_kept_log_gets_a_closing_frame() -> None:
    """Reading from before what the log keeps ends the stream with StreamClosedEvent, saying why."""
    with serve_in_thread(make_server(event_log_limit=10)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            hid = await start(http, "counting", n=50)
            await finished(http, hid)
            frames = parse_sse(
                (await http.get(f"/events/{hid}", params={"after_sequence": -1})).text
            )
            assert len(frames) == 1
            assert "id" not in frames[0]
            assert frames[0]["event"] == "StreamClosedEvent"
            closed = json.loads(frames[0]["data"])["value"]
            assert closed["reason"] == "events_dropped"
            resume = closed["resume_after_sequence"]
            assert f"resume with after_sequence={resume}" in closed["detail"]
            rest = parse_sse(
                (await http.get(f"/events/{hid}", params={"after_sequence": resume})).text
            )
            assert [int(f["id"]) for f in rest] == list(range(resume + 1, 51))
            assert rest[-1]["event"] == "StopEvent"


@pytest.mark.asyncio
async def test_stream_cap_refuses_with_503() -> None:
    """Past max_streams open streams a new one gets 503 and Retry-After; closing frees a slot."""
    with serve_in_thread(make_server(max_streams=2)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            hid = await start(http, "sleeping")
            params = {"after_sequence": -1}
            async with http.stream("GET", f"/events/{hid}", params=params) as one:
                assert one.status_code == 200
                async with http.stream("GET", f"/events/{hid}", params=params) as two:
                    assert two.status_code == 200
                    third = await http.get(f"/events/{hid}", params=params)
                    assert third.status_code == 503
                    assert third.headers["retry-after"] == "1"
                    assert "too many event streams open (2, max_streams)" in third.text
            await asyncio.sleep(0.3)  # the server notices the two hang-ups
            async with http.stream("GET", f"/events/{hid}", params=params) as again:
                assert again.status_code == 200
            await http.post(f"/handlers/{hid}/cancel")
