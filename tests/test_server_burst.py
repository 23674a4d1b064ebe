"""A burst of connections: the server parses a bounded number of request heads per pass
of its event loop, and every request still gets its answer, in order per connection."""

import asyncio
import json
from pathlib import Path

import pytest

from _live_server import serve_in_thread
from _live_server import serve_process
from _served_app import GreetingWorkflow
from stepstream.server import WorkflowServer

CONNECTIONS = 200  # several times what one pass of the loop parses


def _request(name: str) -> bytes:
    body = json.dumps({"start_event": {"greeting": "hi", "name": name}}).encode()
    head = (
        "POST /workflows/greeting/run HTTP/1.1\r\nhost: test\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _answer(reader: asyncio.StreamReader) -> dict[str, object]:
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:80]
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    answer: dict[str, object] = json.loads(await reader.readexactly(length))
    return answer


async def _burst(port: int) -> None:
    """200 connections send a request each at once, then a second one on the same
    connection; each answer belongs to its own request. 50 more hang up right after
    sending theirs."""
    async with asyncio.timeout(60):
        streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CONNECTIONS)]
        quitters = [await asyncio.open_connection("127.0.0.1", port) for _ in range(50)]
        for i, (_, writer) in enumerate(streams):
            writer.write(_request(f"a{i}"))
        for _, writer in quitters:  # a request, then gone before the answer
            writer.write(_request("gone"))
            writer.close()
        firsts = await asyncio.gather(*(_answer(reader) for reader, _ in streams))
        for i, (_, writer) in enumerate(streams):
            writer.write(_request(f"b{i}"))
        seconds = await asyncio.gather(*(_answer(reader) for reader, _ in streams))
        for _, writer in streams:
            writer.close()
    for prefix, answers in (("a", firsts), ("b", seconds)):
        greetings = [a["result"]["value"]["greeting"] for a in answers]  # type: ignore[index]
        assert greetings == [f"hi {prefix}{i}!!!" for i in range(CONNECTIONS)]


@pytest.mark.asyncio
async def test_a_burst_of_connections_all_get_their_answers() -> None:
    """A WorkflowServer on asyncio's own loop answers every request of a burst, in order,
    whatever connections hang up while waiting for their turn."""
    server = WorkflowServer({"greeting": GreetingWorkflow(timeout=20)})
    with serve_in_thread(server) as base:
        await _burst(int(base.rsplit(":", 1)[1]))


@pytest.mark.asyncio
async def test_stepstream_serve_accepts_a_burst_in_batches(tmp_path: Path) -> None:
    """stepstream serve accepts a bounded number of connections per pass of its loop,
    and still answers every request of a burst, in order."""
    with serve_process(cwd=tmp_path) as server:
        await _burst(int(server.url.rsplit(":", 1)[1]))
