"""Real uvicorn servers on 127.0.0.1 for the server tests: a ``stepstream serve`` process,
or a ``WorkflowServer`` in a thread of this process (for settings and in-memory spans).

Each fixture stops exactly the process or thread it started.
"""

import asyncio
import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from stepstream.server import WorkflowServer

TESTS_DIR = Path(__file__).resolve().parent
SERVED_APP = TESTS_DIR / "_served_app.py"
_RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")


class ServeProcess:
    """``python -m stepstream serve TARGET --port 0 ARGS`` and the lines it writes on stderr."""

    def __init__(
        self, target: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
    ) -> None:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stepstream", "serve", str(target), "--port", "0", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=child_env,
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=20_000)
        self._ready = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(30) or not self.url:
            self.stop()
            tail = "".join(list(self.lines)[-10:])
            msg = f"stepstream serve did not start within 30 s:\n{tail}"
            raise AssertionError(msg)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # until the process closes stderr (exits)
            self.lines.append(line)
            found = _RUNNING.search(line)
            if found and not self.url:
                self.url = found.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Stop the process (``sig``, then SIGKILL after 15 s) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return self.proc.returncode


@contextlib.contextmanager
def serve_process(
    *args: str, target: Path = SERVED_APP, cwd: Path, **env: str
) -> Iterator[ServeProcess]:
    """A ``stepstream serve`` process serving ``target``; stopped on exit."""
    process = ServeProcess(target, *args, cwd=cwd, env=env)
    try:
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def serve_in_thread(server: WorkflowServer, **config: Any) -> Iterator[str]:
    """Serve ``server`` with uvicorn on 127.0.0.1 in a thread; yield its base URL."""
    config.setdefault("log_level", "warning")
    uv = server.uvicorn_server("127.0.0.1", 0, **config)
    loop = asyncio.new_event_loop()

    async def main() -> None:
        try:
            await uv.serve()
        finally:
            await server.aclose()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert uv.started, "uvicorn did not start within 20 s"
        port = uv.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=20)
        loop.close()
        assert not thread.is_alive(), "the server thread did not stop within 20 s"


async def trickle(port: int, opened: list[asyncio.StreamWriter], stop: asyncio.Event) -> bool:
    """One slowloris connection: a request head, a byte at a time; True if the server hung up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opened.append(writer)
    writer.write(b"GET /workflows HTTP/1.1\r\nHost: x\r\n")
    for _ in range(40):  # bounded: 40 bytes at most, 0.1 s apart
        if stop.is_set():
            break
        try:
            writer.write(b"X")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1), timeout=0.1)
        except (TimeoutError, ConnectionError):
            continue
        if data == b"":
            return True
    return False
