"""The load generator of the server benchmark: one phase against one server, in its own process.

    python benchmarks/server_load.py --base http://127.0.0.1:8000 runs --n 3000
    python benchmarks/server_load.py --base ... stream --subs 100 --n 2000
    python benchmarks/server_load.py --base ... latency --n 3000 --rate 1000
    python benchmarks/server_load.py --base ... idle --streams 500   # OPEN, then waits for stdin
    python benchmarks/server_load.py --base ... burst --n 500

It speaks only the HTTP API both servers share, over a minimal HTTP/1.1 client of its
own (asyncio, kept-alive connections, Content-Length and chunked bodies): httpx spent
about 2 ms of CPU per request here, so with two cores the client, not the server, set
the pace. It prints one JSON object with its figures. Every loop is bounded by a count and every request by
a timeout; the process ends by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

_T = re.compile(rb'"t":(\d+)')
_GO = {"event": {"type": "HumanResponseEvent", "value": {"response": "go"}}}
_MAX_HEAD = 65_536


class HttpError(Exception):
    """The server answered with an unexpected status, or broke the connection."""


class _Conn(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection, one request at a time.

    Bodies with Content-Length or chunked; ``on_data`` (streaming) gets each chunk's
    bytes with the monotonic time (ns) they arrived, as they arrive.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.state = "idle"
        self.status = 0
        self.need = 0
        self.chunked = False
        self.body = bytearray()
        self.on_data: Callable[[bytes, int], None] | None = None
        self.head_seen: asyncio.Future[int] | None = None
        self.closing = False
        self.done: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - a TCP connection
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for waiter in (self.head_seen, self.done):
            if waiter is not None and not waiter.done():
                if self.closing:  # we hung up: nobody waits for this any more
                    waiter.cancel()
                else:
                    waiter.set_exception(HttpError(f"connection lost ({exc})"))

    def send(
        self, method: str, target: str, body: bytes | None, on_data: Any = None
    ) -> asyncio.Future[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        self.state, self.body, self.on_data = "head", bytearray(), on_data
        self.head_seen, self.done = loop.create_future(), loop.create_future()
        head = f"{method} {target} HTTP/1.1\r\nhost: bench\r\n"
        if body is not None:
            head += f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
        assert self.transport is not None  # noqa: S101 - connected before sending
        self.transport.write(head.encode() + b"\r\n" + (body or b""))
        return self.done

    def data_received(self, data: bytes) -> None:
        arrived = time.monotonic_ns()
        self.buf += data
        while self._step(arrived):
            pass

    def _step(self, arrived: int) -> bool:  # noqa: C901, PLR0911 - one state machine
        buf = self.buf
        if self.state == "head":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            lines = bytes(buf[:end]).split(b"\r\n")
            del buf[: end + 4]
            self.status = int(lines[0].split(b" ", 2)[1])
            headers = dict(line.split(b":", 1) for line in lines[1:])
            headers = {k.strip().lower(): v.strip() for k, v in headers.items()}
            self.chunked = headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            self.need = int(headers.get(b"content-length", b"0"))
            self.state = "size" if self.chunked else "body"
            if self.head_seen is not None and not self.head_seen.done():
                self.head_seen.set_result(self.status)
            return True
        if self.state == "body":
            if len(buf) < self.need:
                return False
            self._deliver(bytes(buf[: self.need]), arrived)
            del buf[: self.need]
            self._finish()
            return False
        if self.state == "size":
            end = buf.find(b"\r\n")
            if end < 0:
                return False
            self.need = int(bytes(buf[:end]).split(b";")[0], 16)
            del buf[: end + 2]
            self.state = "data" if self.need else "trailer"
            return True
        if self.state == "data":
            if len(buf) < self.need + 2:
                return False
            self._deliver(bytes(buf[: self.need]), arrived)
            del buf[: self.need + 2]
            self.state = "size"
            return True
        if self.state == "trailer":
            if len(buf) < 2:
                return False
            del buf[:2]
            self._finish()
        return False

    def _deliver(self, data: bytes, arrived: int) -> None:
        if self.on_data is not None:
            self.on_data(data, arrived)
        else:
            self.body += data

    def _finish(self) -> None:
        self.state = "idle"
        if self.done is not None and not self.done.done():
            self.done.set_result((self.status, bytes(self.body)))


class Client:
    """Connections to one server (host and port from ``base``)."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    async def connect(self) -> _Conn:
        _, conn = await asyncio.get_running_loop().create_connection(_Conn, self.host, self.port)
        return conn

    async def call(
        self, conn: _Conn, method: str, target: str, data: Any = None, expect: int = 200
    ) -> Any:
        body = None if data is None else json.dumps(data).encode()
        async with asyncio.timeout(120):
            status, raw = await conn.send(method, target, body)
        if status != expect:
            msg = f"{method} {target}: {status} {raw[:300]!r}"
            raise HttpError(msg)
        return json.loads(raw) if raw else None


async def _runs(base: str, n: int, concurrency: int, warmup: int) -> dict[str, Any]:
    """``n`` POST /workflows/short/run, ``concurrency`` in flight (one connection each)."""
    client = Client(base)
    conns = [await client.connect() for _ in range(concurrency)]
    body = json.dumps({"start_event": {}}).encode()
    errors = 0

    async def worker(conn: _Conn, count: int) -> None:
        nonlocal errors
        for _ in range(count):
            async with asyncio.timeout(120):
                status, raw = await conn.send("POST", "/workflows/short/run", body)
            if status != 200 or b'"completed"' not in raw:
                errors += 1

    await asyncio.gather(*(worker(c, warmup // concurrency) for c in conns))
    started = time.perf_counter()
    await asyncio.gather(*(worker(c, n // concurrency) for c in conns))
    seconds = time.perf_counter() - started
    _close(conns)
    done, warm = n // concurrency * concurrency, warmup // concurrency * concurrency
    return {
        "runs": done,
        "warmup": warm,
        "seconds": seconds,
        "runs_per_s": done / seconds,
        "errors": errors,
    }


def _close(conns: list[_Conn]) -> None:
    for conn in conns:
        conn.closing = True
        if conn.transport is not None:
            conn.transport.close()


async def _start_stream(client: Client, n: int, rate: float) -> str:
    conn = await client.connect()
    answer = await client.call(
        conn, "POST", "/workflows/stream/run-nowait", {"start_event": {"n": n, "rate": rate}}
    )
    _close([conn])
    handler_id: str = answer["handler_id"]
    return handler_id


class _Subscriber:
    """Reads one SSE stream to its end; counts frames, and with ``latency`` times them."""

    def __init__(self, latency: bool) -> None:
        self.latency = latency
        self.frames = 0
        self.delays_ns: list[int] = []
        self.rest = b""
        self.ended = 0.0
        self.conn: _Conn | None = None

    def feed(self, data: bytes, arrived: int) -> None:
        frames = (self.rest + data).split(b"\n\n")
        self.rest = frames.pop()
        self.frames += sum(1 for f in frames if b"data:" in f)
        if self.latency:
            self.delays_ns.extend(arrived - int(m) for f in frames for m in _T.findall(f))

    async def open(self, client: Client, target: str) -> asyncio.Future[tuple[int, bytes]]:
        """Send the request and wait for the response head; the future ends with the stream."""
        self.conn = await client.connect()
        done = self.conn.send("GET", target, None, on_data=self.feed)
        assert self.conn.head_seen is not None  # noqa: S101 - set by send
        status = await self.conn.head_seen
        if status != 200:
            msg = f"GET {target}: {status}"
            raise HttpError(msg)
        return done

    async def read(self, done: asyncio.Future[tuple[int, bytes]]) -> None:
        await done
        self.ended = time.perf_counter()


async def _stream(  # noqa: PLR0917 - the phase's options, passed on
    base: str, subs: int, n: int, rate: float, latency: bool, sub_base: str | None = None
) -> dict[str, Any]:
    """One run streaming ``n`` events to ``subs`` subscribers; from the go signal to the end.

    The run starts through ``base``; the subscribers read, and the go signal is sent,
    through ``sub_base`` (another replica of a cluster) when given.
    """
    handler_id = await _start_stream(Client(base), n, rate)
    client = Client(sub_base or base)
    readers = [_Subscriber(latency) for _ in range(subs)]
    target = f"/events/{handler_id}?sse=true"
    async with asyncio.timeout(60):
        streams = [await r.open(client, target) for r in readers]
    control = await client.connect()
    started = time.perf_counter()
    await client.call(control, "POST", f"/events/{handler_id}", _GO)
    async with asyncio.timeout(600):
        await asyncio.gather(*(r.read(s) for r, s in zip(readers, streams, strict=True)))
    seconds = max(r.ended for r in readers) - started
    _close([control, *(r.conn for r in readers if r.conn is not None)])
    frames = sum(r.frames for r in readers)
    result: dict[str, Any] = {
        "events": n,
        "subscribers": subs,
        "seconds": seconds,
        "frames": frames,
        "complete": frames == (n + 1) * subs,  # the ticks and the StopEvent, to everyone
        "events_per_s": n * subs / seconds,
    }
    if latency:
        delays = sorted(d / 1e6 for r in readers for d in r.delays_ns)
        result["rate"] = rate
        result["p50_ms"] = statistics.median(delays)
        result["p99_ms"] = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        result["max_ms"] = delays[-1]
    return result


async def _idle(base: str, streams: int) -> dict[str, Any]:
    """Hold ``streams`` idle streams of a parked run open until a line arrives on stdin."""
    client = Client(base)
    handler_id = await _start_stream(client, 1, 0)
    readers = [_Subscriber(latency=False) for _ in range(streams)]
    async with asyncio.timeout(120):
        for reader in readers:
            await reader.open(client, f"/events/{handler_id}?sse=true")
    print("OPEN", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    _close([r.conn for r in readers if r.conn is not None])
    control = await client.connect()
    await client.call(control, "POST", f"/events/{handler_id}", _GO)
    _close([control])
    return {"streams": streams}


async def _burst(base: str, n: int) -> dict[str, Any]:
    """``n`` POST /workflows/short/run sent at once, each on its own connection."""
    client = Client(base)
    conns = [await client.connect() for _ in range(n)]
    body = json.dumps({"start_event": {}}).encode()
    started = time.perf_counter()
    async with asyncio.timeout(300):
        answers = await asyncio.gather(
            *(c.send("POST", "/workflows/short/run", body) for c in conns)
        )
    seconds = time.perf_counter() - started
    _close(conns)
    errors = sum(1 for status, _ in answers if status != 200)
    return {"runs": n, "seconds": seconds, "errors": errors}


def main() -> None:
    """Parse the phase and its sizes, run it, print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="the server, e.g. http://127.0.0.1:8000")
    phases = parser.add_subparsers(dest="phase", required=True)
    runs = phases.add_parser("runs")
    runs.add_argument("--n", type=int, default=3000)
    runs.add_argument("--concurrency", type=int, default=16)
    runs.add_argument("--warmup", type=int, default=320)
    stream = phases.add_parser("stream")
    stream.add_argument("--subs", type=int, default=1)
    stream.add_argument("--n", type=int, default=20_000)
    latency = phases.add_parser("latency")
    latency.add_argument("--n", type=int, default=3000)
    latency.add_argument("--rate", type=float, default=1000.0)
    latency.add_argument("--sub-base", default=None, help="subscribe through this server")
    idle = phases.add_parser("idle")
    idle.add_argument("--streams", type=int, default=500)
    burst = phases.add_parser("burst")
    burst.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    base = args.base.rstrip("/")
    if args.phase == "runs":
        result = asyncio.run(_runs(base, args.n, args.concurrency, args.warmup))
    elif args.phase == "stream":
        result = asyncio.run(_stream(base, args.subs, args.n, 0.0, latency=False))
    elif args.phase == "latency":
        sub_base = args.sub_base.rstrip("/") if args.sub_base else None
        result = asyncio.run(_stream(base, 1, args.n, args.rate, latency=True, sub_base=sub_base))
    elif args.phase == "idle":
        result = asyncio.run(_idle(base, args.streams))
    else:
        result = asyncio.run(_burst(base, args.n))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
