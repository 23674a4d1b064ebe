"""Durable runs in one process: the same results and streams as in memory, and clear errors.

The kill -9 tests are in tests/test_durable_kill.py.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

import stepstream
from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.errors import DurableStoreError
from stepstream.errors import WorkflowCancelledError
from stepstream.errors import WorkflowRuntimeError
from stepstream.errors import WorkflowValidationError
from stepstream.events import Event
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.events import WorkflowFailedEvent

pytest.importorskip("dbos")

from dbos import DBOS

from stepstream.durable import DBOSRuntime


class Item(Event):
    """A numbered event."""

    n: int


class Sum(Event):
    """A partial result."""

    total: int


class Chain(Workflow):
    """Streams from an async and a sync step, then ends with a sum."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Sum:
        """Stream two items."""
        ctx.write_event_to_stream(Item(n=0))
        ctx.write_event_to_stream(Item(n=1))
        return Sum(total=int(ev.get("x", 0)))

    @step
    def second(self, ctx: Context, ev: Sum) -> StopEvent:
        """A sync step: its writes hop from its thread to the loop."""
        for n in range(2, 5):
            ctx.write_event_to_stream(Item(n=n))
        return StopEvent(result=ev.total + 1)


class Fan(Workflow):
    """Fans out into five items and joins them back."""

    @step
    async def split(self, ev: StartEvent) -> list[Item]:
        """Five items."""
        return [Item(n=n) for n in range(5)]

    @step(num_workers=3)
    async def square(self, ctx: Context, ev: Item) -> Sum:
        """Square one item; stream it."""
        ctx.write_event_to_stream(ev)
        return Sum(total=ev.n * ev.n)

    @step
    async def join(self, evs: list[Sum]) -> StopEvent:
        """Add the squares."""
        return StopEvent(result=sum(e.total for e in evs))


class Fails(Workflow):
    """Streams one event, then fails."""

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Fail."""
        ctx.write_event_to_stream(Item(n=7))
        msg = "boom"
        raise ValueError(msg)


class Slow(Workflow):
    """Waits until cancelled."""

    @step
    async def only(self, ev: StartEvent) -> StopEvent:
        """Sleep."""
        await asyncio.sleep(60)
        return StopEvent(result=None)


@asynccontextmanager
async def launched(where: Path | str, *classes: type[Workflow]) -> AsyncIterator[list[Any]]:
    """A launched runtime, and an instance of each class using it.

    ``where`` is a database URL (the ``durable_url`` fixture: SQLite, then Postgres), or
    the directory of a new SQLite file.
    """
    url = where if isinstance(where, str) else f"sqlite:///{where / 'durable.sqlite'}"
    runtime = DBOSRuntime(url)
    workflows: list[Any] = [cls(runtime=runtime, timeout=30) for cls in classes]
    await runtime.launch()
    try:
        yield [runtime, *workflows]
    finally:
        await runtime.destroy()


async def drained(events: AsyncIterator[Event]) -> list[Any]:
    """Item numbers, and the type name of any other event."""
    return [e.n if isinstance(e, Item) else type(e).__name__ async for e in events]


@pytest.mark.asyncio
async def test_a_durable_run_streams_and_ends_as_an_in_memory_one(durable_url: str) -> None:
    """Same events in the same order, same result; the sync step's writes included."""
    in_memory = Chain(timeout=30).run(x=41)
    expected = await drained(in_memory.stream_events())
    async with launched(durable_url, Chain) as (_, chain):
        handler = chain.run(x=41)
        assert await drained(handler.stream_events()) == expected
        assert await handler == await in_memory == 42
    assert expected == [0, 1, 2, 3, 4, "StopEvent"]


@pytest.mark.asyncio
async def test_a_durable_fan_out_joins_as_in_memory(durable_url: str) -> None:
    """A list fan-out and its join give the in-memory result."""
    async with launched(durable_url, Fan) as (_, fan):
        handler = fan.run()
        streamed = await drained(handler.stream_events())
        assert await handler == 30
    assert sorted(streamed[:-1]) == [0, 1, 2, 3, 4]


@pytest.mark.asyncio
async def test_a_failing_step_ends_the_durable_run_with_its_error(durable_url: str) -> None:
    """The step's exception is raised; the stream ends with WorkflowFailedEvent."""
    async with launched(durable_url, Fails) as (_, fails):
        handler = fails.run()
        events = [e async for e in handler.stream_events()]
        assert events[0] == Item(n=7)
        assert isinstance(events[-1], WorkflowFailedEvent)
        with pytest.raises(ValueError, match="boom"):
            await handler


@pytest.mark.asyncio
async def test_a_cancelled_durable_run_has_ended_for_good(durable_url: str) -> None:
    """cancel_run() is the run's end: it cannot be re-attached afterwards."""
    async with launched(durable_url, Slow) as (runtime, slow):
        handler = slow.run()
        await asyncio.sleep(0.05)
        await handler.cancel_run()
        with pytest.raises(WorkflowCancelledError):
            await handler
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status SUCCESS\)"):
            await runtime.handler(handler.run_id)


@pytest.mark.asyncio
async def test_the_stream_is_read_again_from_any_seq(durable_url: str) -> None:
    """After the run ended, after=seq reads the recorded events back, with the terminal."""
    async with launched(durable_url, Chain) as (_, chain):
        handler = chain.run(x=1)
        await handler
        assert await drained(handler.stream_events(after=2)) == [3, 4, "StopEvent"]
        assert await drained(handler.stream_events(after=-1)) == [0, 1, 2, 3, 4, "StopEvent"]


@pytest.mark.asyncio
async def test_a_live_reader_from_a_seq_follows_the_run(durable_url: str) -> None:
    """A reader with after= started while the run goes sees history, then live events."""

    class Gated(Workflow):
        gate: asyncio.Event

        @step
        async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
            ctx.write_event_to_stream(Item(n=0))
            ctx.write_event_to_stream(Item(n=1))
            await self.gate.wait()
            ctx.write_event_to_stream(Item(n=2))
            return StopEvent(result="ok")

    async with launched(durable_url, Gated) as (_, gated):
        gated.gate = asyncio.Event()
        handler = gated.run()
        first = handler.stream_events()
        assert [await anext(first), await anext(first)] == [Item(n=0), Item(n=1)]
        again = asyncio.create_task(drained(handler.stream_events(after=0)))
        await asyncio.sleep(0.05)
        gated.gate.set()
        assert await again == [1, 2, "StopEvent"]
        assert await handler == "ok"


@pytest.mark.asyncio
async def test_re_attaching_names_an_unknown_run(tmp_path: Path) -> None:
    """handler() of an id no durable run has raises, naming it and the database."""
    async with launched(tmp_path, Chain) as (runtime, _):
        with pytest.raises(WorkflowRuntimeError, match=r"no durable run nope in the database"):
            await runtime.handler("nope")


@pytest.mark.asyncio
async def test_a_run_before_launch_says_to_launch(tmp_path: Path) -> None:
    """An explicit runtime must be launched before its workflows run."""
    chain = Chain(runtime=DBOSRuntime(f"sqlite:///{tmp_path / 'x.sqlite'}"))
    with pytest.raises(WorkflowRuntimeError, match=r"call await runtime.launch\(\)"):
        chain.run()


@pytest.mark.asyncio
async def test_a_damaged_database_file_is_named(tmp_path: Path) -> None:
    """A file that is not a SQLite database: DurableStoreError naming the file."""
    path = tmp_path / "durable.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    runtime = DBOSRuntime(f"sqlite:///{path}")
    with pytest.raises(DurableStoreError, match=rf"the durable database {path} cannot be opened"):
        await runtime.launch()
    assert not runtime.is_launched


@pytest.mark.asyncio
async def test_a_missing_database_file_is_named_when_it_must_exist(tmp_path: Path) -> None:
    """create=False (or the peer's run_migrations_on_launch=False) refuses a missing file."""
    path = tmp_path / "gone.sqlite"
    for runtime in (
        DBOSRuntime(f"sqlite:///{path}", create=False),
        DBOSRuntime(f"sqlite:///{path}", run_migrations_on_launch=False),
    ):
        with pytest.raises(DurableStoreError, match=rf"the durable database {path} does not exist"):
            await runtime.launch()
    assert not path.exists()


def test_unknown_options_are_refused() -> None:
    """DBOSRuntime takes the peer's options and its own; others are named."""
    with pytest.raises(WorkflowValidationError, match=r"unknown option\(s\) nope"):
        DBOSRuntime(nope=1)


@pytest.mark.asyncio
async def test_durable_true_keeps_runs_in_the_store_directory_in_wal_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workflow(durable=True): .stepstream/durable.sqlite, launched by the first run."""
    monkeypatch.chdir(tmp_path)
    chain = Chain(durable=True, timeout=30)
    try:
        started = time.perf_counter()
        assert await chain.run(x=1) == 2
        assert time.perf_counter() - started < 10
    finally:
        await chain._runtime.destroy()  # type: ignore[union-attr]
    database = tmp_path / ".stepstream" / "durable.sqlite"
    with sqlite3.connect(database) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_durable_and_runtime_together_are_refused(tmp_path: Path) -> None:
    """One or the other: durable= makes its own runtime."""
    with pytest.raises(WorkflowValidationError, match=r"pass runtime= or durable=, not both"):
        Chain(durable=True, runtime=DBOSRuntime(f"sqlite:///{tmp_path / 'x.sqlite'}"))


@pytest.mark.asyncio
async def test_a_run_id_already_taken_fails_the_new_run(durable_url: str) -> None:
    """A durable run started with the id of an earlier one fails, naming the id."""
    async with launched(durable_url, Chain) as (_, chain):
        assert await chain.run(x=1, run_id="taken") == 2
        handler = chain.run(x=5, run_id="taken")
        with pytest.raises(WorkflowRuntimeError, match=r"run id taken is already taken"):
            await handler
        events = [e async for e in handler.stream_events()]
        assert isinstance(events[-1], WorkflowFailedEvent)


class Unsaveable(Workflow):
    """Keeps something JSON cannot hold in its store."""

    @step
    async def first(self, ctx: Context, ev: StartEvent) -> Sum:
        """Store a set of bytes... a lambda."""
        await ctx.store.set("callback", lambda: None)
        return Sum(total=1)

    @step
    async def second(self, ev: Sum) -> StopEvent:
        """Never reached: the run cannot be saved after first."""
        return StopEvent(result=ev.total)


@pytest.mark.asyncio
async def test_a_run_that_cannot_be_saved_fails_saying_why(durable_url: str) -> None:
    """A value the serializer refuses fails the run, naming the run and the fix."""
    async with launched(durable_url, Unsaveable) as (runtime, unsaveable):
        handler = unsaveable.run()
        with pytest.raises(WorkflowRuntimeError, match=r"could not be saved .*must be serial"):
            await handler
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status ERROR\)"):
            await runtime.handler(handler.run_id)


def test_in_memory_runs_never_load_dbos() -> None:
    """Importing stepstream and running a workflow in memory does not import DBOS."""
    code = (
        "import asyncio, sys\n"
        "from stepstream import Workflow, step\n"
        "from stepstream.events import StartEvent, StopEvent\n"
        "class W(Workflow):\n"
        "    @step\n"
        "    async def only(self, ev: StartEvent) -> StopEvent:\n"
        "        return StopEvent(result=1)\n"
        "async def main() -> None:\n"
        "    assert await W().run() == 1\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'dbos', 'sqlalchemy'}))\n"
    )
    src = str(Path(stepstream.__file__).resolve().parent.parent)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.asyncio
async def test_runtime_cancel_of_a_run_here_is_its_cancel_run(durable_url: str) -> None:
    """runtime.cancel(run_id) of a run of this process cancels it at once, for good."""
    async with launched(durable_url, Slow) as (runtime, slow):
        handler = slow.run()
        await asyncio.sleep(0.05)
        await runtime.cancel(handler.run_id)
        with pytest.raises(WorkflowCancelledError, match=r"cancelled with cancel_run\(\)"):
            await handler
        await runtime.cancel(handler.run_id)  # ended: nothing to do
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status SUCCESS\)"):
            await runtime.handler(handler.run_id)
        with pytest.raises(WorkflowRuntimeError, match=r"there is no durable run nope"):
            await runtime.cancel("nope")


@pytest.mark.asyncio
async def test_a_run_cancelled_in_the_database_ends_cancelled_here(durable_url: str) -> None:
    """DBOS's own cancel (as another process does it) ends the run here as cancelled."""
    async with launched(durable_url, Slow) as (runtime, slow):
        handler = slow.run()
        live = asyncio.create_task(drained(handler.stream_events()))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await DBOS.cancel_workflow_async(handler.run_id)
        with pytest.raises(WorkflowCancelledError, match=r"was cancelled in its database"):
            await handler
        assert time.monotonic() - started < 3  # DBOS's watcher reads statuses every second
        assert await live == ["WorkflowCancelledEvent"]
        assert await drained(handler.stream_events(after=-1)) == ["WorkflowCancelledEvent"]
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status CANCELLED\)"):
            await runtime.handler(handler.run_id)


@pytest.mark.asyncio
async def test_the_event_loop_works_on_after_destroy_and_a_new_launch(tmp_path: Path) -> None:
    """destroy() leaves the loop's thread pool usable; a runtime launched again in it works."""
    async with launched(tmp_path, Chain) as (_, chain):
        assert await chain.run(x=1) == 2
    assert await asyncio.to_thread(lambda: 5) == 5  # sync steps, to_thread: DBOS's pool is gone
    assert await Chain(timeout=30).run(x=2) == 3  # a sync step in memory
    async with launched(tmp_path, Chain) as (runtime, chain):
        handler = chain.run(x=3)
        assert await handler == 4
        with pytest.raises(WorkflowRuntimeError, match=r"has ended \(DBOS status SUCCESS\)"):
            await runtime.handler(handler.run_id)
