"""Bad requests get a clear 4xx naming what is wrong; tokens, size limits, slow clients."""

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from _live_server import serve_in_thread
from _live_server import trickle
from _served_app import AskingWorkflow
from _served_app import CountingWorkflow
from _served_app import GreetEvent
from _served_app import GreetingWorkflow
from stepstream.server import WorkflowServer

TOKEN = "s3cret-token"  # noqa: S105 - the test's own token


def make_server(**options: Any) -> WorkflowServer:
    server = WorkflowServer(
        {"greeting": GreetingWorkflow(timeout=20), "counting": CountingWorkflow(timeout=20)},
        **options,
    )
    # GreetEvent is not in the asking workflow's signatures: named as an additional event.
    server.add_workflow("asking", AskingWorkflow(timeout=20), additional_events=[GreetEvent])
    return server


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_thread(make_server(max_body_bytes=2000, body_timeout=1.0)) as base:
        yield base


def detail(response: httpx.Response) -> str:
    text: str = response.json()["detail"]
    return text


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        pytest.param(b"{not json", 400, "request body is not valid JSON: ", id="invalid-json"),
        pytest.param(b"[1, 2]", 400, "request body must be a JSON object, got list", id="array"),
        pytest.param(
            b'{"start_event": {"greeting": "hi"}}',
            400,
            "start_event.name: Field required (validating InputEvent)",
            id="missing-field",
        ),
        pytest.param(
            b'{"start_event": {"greeting": "hi", "name": 3}}',
            400,
            "start_event.name: Input should be a valid string (validating InputEvent)",
            id="wrong-type",
        ),
        pytest.param(
            b'{"start_event": {"type": "GreetEvent", "value": {}}}',
            400,
            "start_event.type: unknown event type 'GreetEvent'; this workflow takes "
            "InputEvent, StartEvent",
            id="not-the-start-event",
        ),
        pytest.param(
            b'{"start_event": {"type": "InputEvent", "value": [1]}}',
            400,
            "start_event.value: must be a JSON object of the event's fields, got list",
            id="value-not-object",
        ),
        pytest.param(
            b'{"handler_id": "a/b"}',
            400,
            "handler_id: must be 1-128 letters, digits or '._~-', got 'a/b'",
            id="bad-handler-id",
        ),
        pytest.param(
            b'{"context": {"state": {}}, "start_event": {"greeting": "a", "name": "b"}}',
            400,
            "context: this server does not accept a saved context",
            id="context",
        ),
        pytest.param(
            b"x" * 3000,
            413,
            "request body is 3000 bytes; this server accepts at most 2000",
            id="oversized",
        ),
    ],
)
async def test_bad_run_bodies_get_a_clear_4xx(
    url: str, body: bytes, status: int, expected: str
) -> None:
    """Each malformed run request is refused with its status and a detail naming the field."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.post("/workflows/greeting/run-nowait", content=body)
    assert response.status_code == status, response.text
    assert detail(response).startswith(expected), detail(response)


@pytest.mark.asyncio
async def test_unknown_names_get_404(url: str) -> None:
    """Unknown workflows, handlers and paths are 404s naming what is missing."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        wf = await http.post("/workflows/nope/run", json={})
        assert wf.status_code == 404
        assert detail(wf) == (
            "Workflow not found: no workflow is served as 'nope' "
            "(served: asking, counting, greeting)"
        )
        for method, path in [
            ("GET", "/handlers/missing"),
            ("GET", "/events/missing"),
            ("POST", "/handlers/missing/cancel"),
            ("GET", "/results/missing"),
        ]:
            response = await http.request(method, path)
            assert response.status_code == 404, path
            assert detail(response) == "Handler not found: no handler 'missing' on this server"
        assert (await http.get("/elsewhere")).status_code == 404


@pytest.mark.asyncio
async def test_bad_events_get_a_clear_4xx(url: str) -> None:
    """Sent events are validated against the workflow's classes; the run is untouched."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        started = await http.post("/workflows/asking/run-nowait", json={})
        hid = started.json()["handler_id"]
        cases = [
            ({}, "event: required"),
            ({"event": {"type": "Nope", "value": {}}}, "event.type: unknown event type 'Nope';"),
            (
                {"event": {"type": "GreetEvent", "value": {"greeting": 1}}},
                (
                    "event.value.greeting: Input should be a valid string; "
                    "event.value.exclamation_marks: Field required (validating GreetEvent)"
                ),
            ),
            ({"event": {"value": {}}}, 'event: name the event class with "type"'),
            ({"event": {"type": "Tick", "value": {}}, "step": 3}, "step: must be a step name"),
            (
                {"event": {"type": "HumanResponseEvent", "value": {}}, "step": "nope"},
                "event: ",
            ),
        ]
        for body, expected in cases:
            response = await http.post(f"/events/{hid}", json=body)
            assert response.status_code == 400, (body, response.text)
            assert detail(response).startswith(expected), detail(response)
        bad_after = await http.get(f"/events/{hid}", params={"after_sequence": "x"})
        assert bad_after.status_code == 400
        assert (
            detail(bad_after)
            == "after_sequence: must be an event seq (an integer) or 'now', got 'x'"
        )
        bad_status = await http.get("/handlers", params={"status": "done"})
        assert detail(bad_status).startswith("status: unknown status 'done'")
        ok = await http.post(
            f"/events/{hid}",
            json={"event": {"type": "HumanResponseEvent", "value": {"response": "x"}}},
        )
        assert ok.json() == {"status": "sent"}
        async with asyncio.timeout(10):
            while (await http.get(f"/handlers/{hid}")).status_code == 202:  # noqa: ASYNC110 - polling over HTTP
                await asyncio.sleep(0.02)
        late = await http.post(
            f"/events/{hid}",
            json={"event": {"type": "HumanResponseEvent", "value": {"response": "y"}}},
        )
        assert late.status_code == 409
        assert detail(late).startswith("Workflow already completed: handler ")
        cancel = await http.post(f"/handlers/{hid}/cancel")
        assert cancel.status_code == 409
        assert "already ended (completed); nothing to cancel" in detail(cancel)


@pytest.mark.asyncio
async def test_bearer_token_on_every_route_but_health() -> None:
    """With a token, requests without it or with another get 401; /health stays open."""
    with serve_in_thread(make_server(token=TOKEN)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            assert (await http.get("/health")).status_code == 200
            missing = await http.get("/workflows")
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert detail(missing).startswith("missing bearer token")
            for header in ("Bearer wrong", "Basic czNjcmV0", TOKEN):
                wrong = await http.get("/workflows", headers={"Authorization": header})
                assert wrong.status_code == 401, header
                assert detail(wrong).startswith("wrong bearer token")
            right = await http.get("/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
            assert right.status_code == 200


@pytest.mark.asyncio
async def test_token_paths_hold_when_mounted_under_a_prefix() -> None:
    """Mounted in a host app, /health stays open and the API still wants the token."""
    server = make_server(token=TOKEN)
    host = Starlette(routes=[Mount("/wf", app=server)])
    async with (
        server.lifespan(),
        httpx.AsyncClient(transport=httpx.ASGITransport(host), base_url="http://host") as http,
    ):
        assert (await http.get("/wf/health")).status_code == 200
        assert (await http.get("/wf/workflows")).status_code == 401
        right = await http.get("/wf/workflows", headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 200


@pytest.mark.asyncio
async def test_cors_is_off_unless_configured() -> None:
    """No CORS headers by default; configured origins get them (and preflights need no token)."""
    origin = {"Origin": "http://app.example"}
    with serve_in_thread(make_server()) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            response = await http.get("/workflows", headers=origin)
            assert "access-control-allow-origin" not in response.headers
    with serve_in_thread(make_server(cors_origins=("http://app.example",), token=TOKEN)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            preflight = await http.options(
                "/workflows",
                headers={**origin, "Access-Control-Request-Method": "GET"},
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "http://app.example"


@pytest.mark.asyncio
async def test_slowloris_does_not_stop_normal_requests() -> None:
    """200 half-open connections trickling headers: normal requests still answer at once,
    and the server closes the slow ones after header_timeout."""
    with serve_in_thread(make_server(header_timeout=1.0)) as base:
        port = int(base.rsplit(":", 1)[1])
        opened: list[asyncio.StreamWriter] = []
        stop = asyncio.Event()
        slow = [asyncio.ensure_future(trickle(port, opened, stop)) for _ in range(200)]
        try:
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:
                for _ in range(10):
                    began = time.monotonic()
                    response = await http.post("/workflows/counting/run", json={})
                    assert response.status_code == 200
                    assert time.monotonic() - began < 1.0
            hung_up = await asyncio.wait_for(asyncio.gather(*slow), timeout=10)
        finally:
            stop.set()
            await asyncio.gather(*slow, return_exceptions=True)
            for writer in opened:
                writer.close()
    assert sum(hung_up) >= 190, f"only {sum(hung_up)} of 200 slow connections were closed"


@pytest.mark.asyncio
async def test_a_slow_body_times_out_with_408(url: str) -> None:
    """A body that does not arrive within body_timeout gets 408."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /workflows/counting/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: 50\r\n\r\n{"
        )
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")


@pytest.mark.asyncio
async def test_an_oversized_request_head_gets_431_naming_the_limit(url: str) -> None:
    """A request line and headers over 64 KiB get 431 and the connection is closed; the
    server goes on serving others."""
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(5):
            answer = await reader.read()  # to the end: the server closes the connection
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert answer.endswith(
        b"request head too large: the request line and headers may take 65536 bytes"
    )
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        assert (await http.get("/health")).status_code == 200


@pytest.mark.asyncio
async def test_pipelined_requests_are_not_cut_by_the_head_deadline() -> None:
    """Two requests sent back to back on one connection, each taking longer than
    header_timeout: the second's head was read in time, so both are answered."""
    body = b'{"start_event": {"n": 4, "delay": 0.3}}'
    request = (
        b"POST /workflows/counting/run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with serve_in_thread(make_server(header_timeout=1.0)) as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request + request)
            await writer.drain()
            async with asyncio.timeout(10):
                for _ in range(2):
                    head = await reader.readuntil(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200 "), head
                    length = next(
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                    assert b'"result":4' in (await reader.readexactly(length)).replace(b" ", b"")
        finally:
            writer.close()
