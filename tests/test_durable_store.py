"""What a durable run leaves in DBOS's tables: one stream row per journal commit.

A commit is one row of DBOS's streams table (no operation row: a journal write spends
no DBOS step id), written by one statement that also checks that this process still
owns the run's DBOS workflow; concurrent runs share commits. On SQLite and Postgres.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from _postgres import PostgresServer
from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.events import Event
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.telemetry import Observer
from stepstream.telemetry import RunInfo
from stepstream.telemetry import observe

pytest.importorskip("dbos")

import sqlalchemy as sa
from dbos import DBOS

from stepstream.durable import DBOSRuntime


class Hop(Event):
    """The chain's step-to-step event."""

    i: int


class Chain(Workflow):
    """Ten sequential steps, each streaming one event."""

    @step
    async def begin(self, ev: StartEvent) -> Hop:
        """First step."""
        return Hop(i=0)

    @step
    async def hop(self, ctx: Context, ev: Hop) -> Hop | StopEvent:
        """One step per hop."""
        ctx.write_event_to_stream(ev)
        if ev.i >= 9:
            return StopEvent(result=ev.i)
        return Hop(i=ev.i + 1)


class Held(Workflow):
    """One step that waits for the test's signal."""

    gate: asyncio.Event

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Wait, stream, end."""
        await self.gate.wait()
        ctx.write_event_to_stream(Hop(i=1))
        return StopEvent(result="done")


class Commits(Observer):
    """Counts the journal commits."""

    def __init__(self) -> None:
        self.count = 0

    def checkpoint_committed(self, run: RunInfo, seconds: float) -> None:
        """One commit."""
        self.count += 1


@asynccontextmanager
async def launched(url: str, *classes: type[Workflow]) -> AsyncIterator[list[Any]]:
    """A launched runtime on ``url``, and an instance of each class using it."""
    runtime = DBOSRuntime(url)
    workflows: list[Any] = [cls(runtime=runtime, timeout=30) for cls in classes]
    await runtime.launch()
    try:
        yield [runtime, *workflows]
    finally:
        await runtime.destroy()


def rows(url: str, table: str, run_id: str) -> int:
    """Rows of DBOS's ``table`` that belong to run ``run_id``."""
    schema = "" if url.startswith("sqlite") else "dbos."
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            query = sa.text(f"SELECT count(*) FROM {schema}{table} WHERE workflow_uuid = :id")  # noqa: S608
            return int(conn.execute(query, {"id": run_id}).scalar_one())
    finally:
        engine.dispose()


async def check_rows_per_commit(url: str) -> None:
    """A run's journal is one stream row per commit and no operation row."""
    commits = Commits()
    async with launched(url, Chain) as (_, chain):
        with observe(commits):
            handler = chain.run()
            assert await handler == 9
    assert commits.count > 0
    assert rows(url, "streams", handler.run_id) == commits.count
    assert rows(url, "operation_outputs", handler.run_id) == 0


async def check_concurrent_runs(url: str) -> None:
    """Fifty runs at once (their commits grouped) each stream and end as alone."""
    async with launched(url, Chain) as (_, chain):
        handlers = [chain.run() for _ in range(50)]

        async def hops(handler: Any) -> list[int]:
            return [e.i async for e in handler.stream_events() if isinstance(e, Hop)]

        streams = await asyncio.gather(*(hops(h) for h in handlers))
        assert await asyncio.gather(*handlers) == [9] * 50
    assert streams == [list(range(10))] * 50


async def check_cancelled_workflow_writes_nothing(url: str) -> None:
    """A run whose DBOS workflow was cancelled behind its back records nothing more."""
    async with launched(url, Held) as (_, held):
        held.gate = asyncio.Event()
        handler = held.run()
        await asyncio.sleep(0.3)  # its start is recorded
        before = rows(url, "streams", handler.run_id)
        await DBOS.cancel_workflow_async(handler.run_id)
        held.gate.set()
        with pytest.raises(BaseException):  # noqa: B017, PT011 - DBOS's cancellation
            await asyncio.wait_for(handler, 10)
        assert rows(url, "streams", handler.run_id) == before


@pytest.mark.asyncio
async def test_sqlite_a_commit_is_one_stream_row_and_no_operation_row(tmp_path: Path) -> None:
    """SQLite: one stream row per commit, no operation rows."""
    await check_rows_per_commit(f"sqlite:///{tmp_path / 'durable.sqlite'}")


@pytest.mark.asyncio
async def test_sqlite_concurrent_runs_share_the_writer(tmp_path: Path) -> None:
    """SQLite: concurrent runs."""
    await check_concurrent_runs(f"sqlite:///{tmp_path / 'durable.sqlite'}")


@pytest.mark.asyncio
async def test_sqlite_a_cancelled_workflow_writes_nothing_more(tmp_path: Path) -> None:
    """SQLite: the ownership check."""
    await check_cancelled_workflow_writes_nothing(f"sqlite:///{tmp_path / 'durable.sqlite'}")


@pytest.mark.asyncio
async def test_postgres_journal_commits(postgres: PostgresServer) -> None:
    """Postgres: the same three checks, on one database."""
    await check_rows_per_commit(postgres.url)
    await check_concurrent_runs(postgres.url)
    await check_cancelled_workflow_writes_nothing(postgres.url)
