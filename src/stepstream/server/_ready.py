"""``GET /health/ready``: whether this server can take requests now (a readiness probe).

``/health`` answers while the process serves (liveness: restart it when it does not).
``/health/ready`` says whether a load balancer should send it requests: a durable server
is ready when its database answers a trivial query within :data:`READY_TIMEOUT` seconds;
a server shutting down, or whose database is away, answers 503 with a JSON ``detail``
that names the database (its password left out). An in-memory server is ready while it
serves. Open without the bearer token, like ``/health``.

One check at a time: probes arriving while a check runs wait for its answer, so a slow
database never piles up connections. The check runs in a thread of its own (the driver's
calls block) with one pooled connection, re-opened after a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request
from starlette.responses import Response

from stepstream._text import error_text
from stepstream.server._api import json_response

__all__ = ["READY_PATH", "READY_TIMEOUT", "Readiness", "shown_database"]

READY_PATH = "/health/ready"
#: Seconds the database has to answer a readiness check.
READY_TIMEOUT = 2.0


def shown_database(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host:5432/db``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.rsplit("@", maxsplit=1)[-1] if "@" in url else url
    if password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Readiness:
    """The readiness of one server: its database (None: in memory) and its stop flag."""

    def __init__(
        self, database_url: str | None, stop: asyncio.Event, timeout: float = READY_TIMEOUT
    ) -> None:
        self.database_url = database_url
        self.database = shown_database(database_url) if database_url else None
        self.timeout = timeout
        self._stop = stop
        self._engine: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._check: asyncio.Future[str | None] | None = None

    async def endpoint(self, request: Request) -> Response:
        """``GET /health/ready``: 200 ``{"status": "ready"}``, else 503 with the reason."""
        if self._stop.is_set():
            detail = "this server is shutting down; send requests to another replica"
            return json_response({"status": "unavailable", "detail": detail}, 503)
        problem = await self.problem()
        if problem is not None:
            body = {"status": "unavailable", "database": self.database, "detail": problem}
            response = json_response(body, 503)
            response.headers["Retry-After"] = "1"
            return response
        answer: dict[str, str] = {"status": "ready"}
        if self.database is not None:
            answer["database"] = self.database
        return json_response(answer)

    async def problem(self) -> str | None:
        """Why this server is not ready (None: ready); one database check at a time."""
        if self.database_url is None:
            return None
        if self._check is None or self._check.done():
            self._check = asyncio.ensure_future(self._ask())
        return await asyncio.shield(self._check)

    async def _ask(self) -> str | None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepstream-ready")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                await loop.run_in_executor(self._pool, self._query)
        except TimeoutError:
            return self._unready(f"no answer within {self.timeout:g} s")
        except Exception as exc:  # noqa: BLE001 - any failure is the reason it is not ready
            lines = error_text(exc).strip().splitlines()
            return self._unready(f"{type(exc).__name__}: {lines[0] if lines else 'no message'}")
        return None

    def _unready(self, why: str) -> str:
        return (
            f"the durable database {self.database} is not answering ({why}); this server "
            "cannot serve runs until it does"
        )

    def _query(self) -> None:
        """``SELECT 1`` on the database (blocking; in the check's thread)."""
        url = str(self.database_url)
        if url.startswith("sqlite:///"):
            path = url.removeprefix("sqlite:///").split("?", 1)[0]
            # Read-only: a check never creates a missing database file.
            with contextlib.closing(
                sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=self.timeout)
            ) as conn:
                conn.execute("SELECT 1").fetchone()
            return
        import sqlalchemy as sa  # noqa: PLC0415 - a durable server has it (the durable extra)

        if self._engine is None:
            target = sa.engine.make_url(url)
            if target.drivername in {"postgresql", "postgres"}:
                target = target.set(drivername="postgresql+psycopg")
            timeout = max(1, round(self.timeout))
            self._engine = sa.create_engine(
                target,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                connect_args={"connect_timeout": timeout},
            )
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1")).scalar()

    def close(self) -> None:
        """Let go of the connection and the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
        if self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.dispose()
            self._engine = None
