"""``GET /health/ready``: a durable server is ready while its database answers.

``/health`` stays the liveness probe (the process serves); ``/health/ready`` is the
readiness probe a load balancer or Kubernetes reads. Real ``stepstream serve`` processes
on a real Postgres (Debian's, on 127.0.0.1) of the test's own, stopped and started again;
a listener that accepts connections and never answers stands for a database that hangs.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from _live_server import ServeProcess
from _postgres import PostgresServer
from stepstream import StartEvent
from stepstream import StopEvent
from stepstream import Workflow
from stepstream import step

pytest.importorskip("dbos")

APP = Path(__file__).parent / "_durable_served_app.py"
SECRET = "s3cret-pw"  # noqa: S105 - trust authentication lets any password in; it must never show


class Echo(Workflow):
    """One step."""

    @step
    async def echo(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=ev.get("x"))


def ready(url: str, **headers: str) -> httpx.Response:
    return httpx.get(f"{url}/health/ready", headers=headers, timeout=30)


def poll_status(url: str, status: int, seconds: float = 30) -> httpx.Response:
    """GET /health/ready until it answers ``status``."""
    deadline = time.monotonic() + seconds
    while True:
        response = ready(url)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    """A Postgres server of this module's own: the tests stop and start it."""
    with PostgresServer() as server:
        yield server


def test_an_in_memory_server_is_ready_without_a_token() -> None:
    """A server without a database is ready while it serves; no token is asked for."""
    from stepstream.server import WorkflowServer  # noqa: PLC0415

    async def call() -> list[httpx.Response]:
        server = WorkflowServer({"echo": Echo()}, token="t0ken")  # noqa: S106
        transport = httpx.ASGITransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            answers = [await http.get("/health/ready"), await http.get("/workflows")]
            await server.aclose()
            answers.append(await http.get("/health/ready"))
            answers.append(await http.get("/health"))
        return answers

    ready_now, guarded, stopping, live = asyncio.run(call())
    assert (ready_now.status_code, ready_now.json()) == (200, {"status": "ready"})
    assert guarded.status_code == 401, "the other routes still want the token"
    assert stopping.status_code == 503
    assert stopping.json()["detail"] == (
        "this server is shutting down; send requests to another replica"
    )
    assert (live.status_code, live.json()) == (200, {"status": "healthy"}), "/health unchanged"


def test_a_durable_server_is_ready_while_postgres_answers(
    own_postgres: PostgresServer, tmp_path: Path
) -> None:
    """Ready (200) with Postgres up, 503 naming the database (no password) once it is
    stopped, ready again when it is back; /health answers 200 throughout."""
    url = own_postgres.database_url("ready_test").replace("postgres@", f"postgres:{SECRET}@")
    shown = f"postgresql://postgres:***@127.0.0.1:{own_postgres.port}/ready_test"
    server = ServeProcess(APP, f"--durable={url}", cwd=tmp_path)
    try:
        up = ready(server.url)
        assert up.status_code == 200, up.text
        assert up.json() == {"status": "ready", "database": shown}

        own_postgres.stop()
        started = time.monotonic()
        down = ready(server.url)
        assert time.monotonic() - started < 10, "a stopped database is reported at once"
        assert down.status_code == 503, down.text
        body = down.json()
        assert body["status"] == "unavailable"
        assert body["database"] == shown
        assert body["detail"].startswith(f"the durable database {shown} is not answering (")
        assert body["detail"].endswith("); this server cannot serve runs until it does")
        assert SECRET not in down.text
        assert down.headers["retry-after"] == "1"
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200, "still live"

        own_postgres.start()
        back = poll_status(server.url, 200)
        assert back.status_code == 200, back.text
    finally:
        if own_postgres.pid is None:
            own_postgres.start()
        server.stop()


@pytest.fixture
def silent_database() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word (a hung database)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


def test_a_database_that_does_not_answer_is_unready_within_the_timeout(
    silent_database: int,
) -> None:
    """A database that takes connections but never answers: 503 after about 2 s, not later;
    probes sent meanwhile share the one check."""
    from stepstream.server import WorkflowServer  # noqa: PLC0415

    url = f"postgresql://app:{SECRET}@127.0.0.1:{silent_database}/runs"

    async def call() -> tuple[list[Any], float]:
        server = WorkflowServer({"echo": Echo()}, durable=url)
        transport = httpx.ASGITransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            started = time.monotonic()
            answers = await asyncio.gather(*(http.get("/health/ready") for _ in range(3)))
            took = time.monotonic() - started
        return [(a.status_code, a.json()) for a in answers], took

    answers, took = asyncio.run(call())
    assert took < 5, f"answered after {took:.1f} s"
    for status, body in answers:
        assert status == 503
        assert body["detail"] == (
            f"the durable database postgresql://app:***@127.0.0.1:{silent_database}/runs is "
            "not answering (no answer within 2 s); this server cannot serve runs until it does"
        )


def test_a_durable_server_on_sqlite_is_ready(tmp_path: Path) -> None:
    """The default SQLite database answers: ready, the database named."""
    server = ServeProcess(APP, "--durable", "--telemetry-dir", str(tmp_path / "t"), cwd=tmp_path)
    try:
        answer = ready(server.url)
        assert answer.status_code == 200, answer.text
        database = (tmp_path / "t" / "durable.sqlite").resolve()
        assert answer.json() == {"status": "ready", "database": f"sqlite:///{database}"}
    finally:
        server.stop()
