"""A driver of many durable runs of every kind, for tests/test_durable_chaos.py to kill -9.

``python _durable_chaos_app.py DIR zygote`` imports everything once, then forks one
driver process per line ``fork N`` read on stdin (answering ``pid P``) and reaps it on
``wait P`` (answering ``exit P STATUS``): each incarnation is a real process, killed
with SIGKILL by the test, without paying the imports again. The database is
``$STEPSTREAM_TEST_DATABASE`` or DIR/durable.sqlite.

Incarnation N launches the runtime (the runs that did not end resume), touches
DIR/launched-N, and follows every planned run (:data:`PLAN`): it starts those the
database does not have (with their fixed run ids), re-attaches to the others, reads each
run's stream after the last seq its reader recorded, answers the runs that wait for a
human, and records each result. Once every run has a result it writes DIR/all-done.

Outside the process, in DIR: ``effects.txt`` gets ``effect|run|step|key|attempt|pid|ns``
as each step attempt begins (its side effect) and ``done|...`` when its completion is
told (once it is recorded); ``reader-RUN.txt`` ``seq|label`` per streamed event the run's
reader got; ``results.txt`` ``RUN|json``; ``spans-N.jsonl`` the spans; at the end,
``recorded.json`` when the journal recorded each step completion (see :func:`audit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from _durable_app import SpanFile
from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.durable import DBOSRuntime
from stepstream.durable import _dbos_io
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event
from stepstream.events import HumanResponseEvent
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import Observer
from stepstream.telemetry import StepInfo
from stepstream.telemetry import observe

#: Runs of each kind.
PER_KIND = int(os.environ.get("STEPSTREAM_CHAOS_RUNS", "5"))
KINDS = ("chain", "fan", "ask", "flaky", "long")
PLAN = [f"{kind}-{i}" for i in range(PER_KIND) for kind in KINDS]
#: The incarnations the test kills: the plan's runs start evenly over them.
KILLS = int(os.environ.get("STEPSTREAM_CHAOS_KILLS", "50"))


class Label(Event):
    """A streamed event: which step wrote it."""

    label: str


class Hop(Event):
    """A value passed down a chain."""

    n: int


class Item(Event):
    """One item of a fan-out."""

    n: int


class Squared(Event):
    """One item, squared."""

    n: int


class Answer(Event):
    """What the human said."""

    text: str


def pause(ctx: Context, low: float = 0.02, high: float = 0.25) -> float:
    """A delay in [low, high) fixed by the step key: steps last a while, the same each run."""
    digest = hashlib.sha256(ctx.step_key.encode()).digest()
    return low + (high - low) * digest[0] / 256


class Chaotic(Workflow):
    """The effect every step has: a line in DIR/effects.txt as each attempt begins."""

    directory: Path

    def effect(self, ctx: Context, step_name: str) -> None:
        """Record the attempt outside the process, then stream a label."""
        run_id, _, _ = ctx.step_key.partition(":")
        attempt = ctx.retry_info().retry_number + 1
        pid, now = os.getpid(), time.time_ns()
        line = f"effect|{run_id}|{step_name}|{ctx.step_key}|{attempt}|{pid}|{now}\n"
        with (self.directory / "effects.txt").open("a", encoding="utf-8") as out:
            out.write(line)
        ctx.write_event_to_stream(Label(label=step_name))


class Chain(Chaotic):
    """Three steps in a row, each streaming and pausing; the store carries what they saw."""

    @step
    async def one(self, ctx: Context, ev: StartEvent) -> Hop:
        """Add one."""
        self.effect(ctx, "one")
        await asyncio.sleep(pause(ctx))
        await ctx.store.set("seen", ["one"])
        return Hop(n=int(ev.get("x", 0)) + 1)

    @step
    async def two(self, ctx: Context, ev: Hop) -> Item:
        """Times ten."""
        self.effect(ctx, "two")
        await asyncio.sleep(pause(ctx))
        await ctx.store.set("seen", [*await ctx.store.get("seen"), "two"])
        return Item(n=ev.n * 10)

    @step
    async def three(self, ctx: Context, ev: Item) -> StopEvent:
        """Plus two; end."""
        self.effect(ctx, "three")
        await asyncio.sleep(pause(ctx))
        return StopEvent(result={"n": ev.n + 2, "seen": [*await ctx.store.get("seen"), "three"]})


class Fan(Chaotic):
    """Fan out into five items (three workers), square them, join."""

    @step
    async def split(self, ctx: Context, ev: StartEvent) -> list[Item]:
        """Five items from x."""
        self.effect(ctx, "split")
        return [Item(n=int(ev.get("x", 0)) + k) for k in range(5)]

    @step(num_workers=3)
    async def square(self, ctx: Context, ev: Item) -> Squared:
        """Square one."""
        self.effect(ctx, "square")
        await asyncio.sleep(pause(ctx))
        return Squared(n=ev.n * ev.n)

    @step
    async def join(self, ctx: Context, evs: list[Squared]) -> StopEvent:
        """Sum them."""
        self.effect(ctx, "join")
        return StopEvent(result=sum(e.n for e in evs))


class Ask(Chaotic):
    """Ask a human, wait for the answer, greet."""

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> Answer:
        """Wait for a HumanResponseEvent."""
        self.effect(ctx, "ask")
        reply = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        return Answer(text=str(reply.get("response")))

    @step
    async def greet(self, ctx: Context, ev: Answer) -> StopEvent:
        """Greet."""
        self.effect(ctx, "greet")
        await asyncio.sleep(pause(ctx))
        return StopEvent(result=f"hello {ev.text}")


class Flaky(Chaotic):
    """A step failing its first two attempts, retried after 0.3 s each time."""

    @step
    async def prepare(self, ctx: Context, ev: StartEvent) -> Hop:
        """Pass x on."""
        self.effect(ctx, "prepare")
        return Hop(n=int(ev.get("x", 0)))

    @step(retry_policy=retry_policy(wait=wait_fixed(0.3), stop=stop_after_attempt(6)))
    async def flaky(self, ctx: Context, ev: Hop) -> StopEvent:
        """Fail on attempts 1 and 2."""
        self.effect(ctx, "flaky")
        retries = ctx.retry_info().retry_number
        if retries < 2:
            msg = f"attempt {retries + 1} fails"
            raise ValueError(msg)
        return StopEvent(result={"n": ev.n, "retries": retries})


class Long(Chaotic):
    """A short step, then one that takes 0.6 s."""

    @step
    async def prepare(self, ctx: Context, ev: StartEvent) -> Hop:
        """Pass x on."""
        self.effect(ctx, "prepare")
        return Hop(n=int(ev.get("x", 0)))

    @step
    async def long(self, ctx: Context, ev: Hop) -> StopEvent:
        """Work for 0.6 s, streaming a tick every 0.2 s."""
        self.effect(ctx, "long")
        for tick in range(3):
            await asyncio.sleep(0.2)
            ctx.write_event_to_stream(Label(label=f"tick{tick}"))
        return StopEvent(result=ev.n * 3)


CLASSES: dict[str, type[Chaotic]] = {
    "chain": Chain,
    "fan": Fan,
    "ask": Ask,
    "flaky": Flaky,
    "long": Long,
}


def start_args(run_id: str) -> dict[str, Any]:
    """The start event's fields of planned run ``run_id``."""
    return {"x": int(run_id.rpartition("-")[2]) + 1}


class Done(Observer):
    """Records each step completion told (a durable run tells it once it is recorded)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """One line per completed step attempt."""
        key = f"{inv.run.run_id}:{inv.step}:{inv.invocation}"
        pid, now = os.getpid(), time.time_ns()
        line = f"done|{inv.run.run_id}|{inv.step}|{key}|{inv.attempt}|{pid}|{now}\n"
        with (self.directory / "effects.txt").open("a", encoding="utf-8") as out:
            out.write(line)


def label(event: Event) -> str:
    """What a reader records of an event."""
    return event.label if isinstance(event, Label) else type(event).__name__


def cursor(directory: Path, run_id: str) -> int:
    """The last seq the run's reader recorded, or -1."""
    path = directory / f"reader-{run_id}.txt"
    if not path.exists():
        return -1
    lines = path.read_text(encoding="utf-8").splitlines()
    return int(lines[-1].split("|")[0]) if lines else -1


def note(path: Path, line: str) -> None:
    """Append one line to ``path`` (one write: a kill leaves whole lines)."""
    with path.open("a", encoding="utf-8") as out:
        out.write(line + "\n")


async def read(handler: WorkflowHandler, directory: Path, run_id: str) -> None:
    """Record every event after the reader's cursor, with its seq."""
    seq = cursor(directory, run_id)
    async for event in handler.stream_events(after=seq):
        seq += 1
        note(directory / f"reader-{run_id}.txt", f"{seq}|{label(event)}")


async def ended_elsewhere(runtime: DBOSRuntime, wf: Chaotic, run_id: str) -> None:
    """A run that ended before this incarnation saw it end: read its rest and its result."""
    directory = wf.directory
    after = cursor(directory, run_id)
    for seq, event, _ in await runtime.events(run_id, wf.workflow_name, after):
        note(directory / f"reader-{run_id}.txt", f"{seq}|{label(event)}")
    record = await runtime.run(run_id)
    assert record is not None
    assert record.terminal is not None
    note(directory / "results.txt", f"{run_id}|{json.dumps(record.terminal.result)}")


async def follow(runtime: DBOSRuntime, wfs: dict[str, Chaotic], run_id: str) -> None:
    """Start, or re-attach to, run ``run_id``; read its stream; record its result."""
    directory = wfs["chain"].directory
    kind = run_id.partition("-")[0]
    asked = time.monotonic()
    try:
        handler = await runtime.handler(run_id, timeout=60)
        sys.stdout.write(f"{run_id} re-attached after {time.monotonic() - asked:.2f} s\n")
    except WorkflowRuntimeError as exc:
        if "has ended" in str(exc):
            await ended_elsewhere(runtime, wfs[kind], run_id)
            return
        if "there is no durable run" not in str(exc):
            raise
        handler = wfs[kind].run(run_id=run_id, **start_args(run_id))
    reader = asyncio.create_task(read(handler, directory, run_id))
    if kind == "ask":  # answered anew by every incarnation: an answer is kept once recorded
        await asyncio.sleep(0.5)
        with contextlib.suppress(WorkflowRuntimeError):  # it may have ended meanwhile
            await handler.send_event(HumanResponseEvent(response=f"user {run_id}"))
    result = await handler
    await reader
    note(directory / "results.txt", f"{run_id}|{json.dumps(result)}")


def finished(directory: Path) -> set[str]:
    """The runs with a recorded result."""
    path = directory / "results.txt"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return {line.split("|", 1)[0] for line in text.splitlines()}


async def incarnation(directory: Path, n: int) -> None:
    """One driver process's life (see the module docstring)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SpanFile(directory / f"spans-{n}.jsonl")))
    url = os.environ.get("STEPSTREAM_TEST_DATABASE") or f"sqlite:///{directory / 'durable.sqlite'}"
    # Runs waiting for their answer are released after 0.3 s (the answer comes at 0.5 s).
    runtime = DBOSRuntime(url, idle_release_after=0.3)
    wfs = {
        kind: cls(runtime=runtime, timeout=None, tracer_provider=provider)
        for kind, cls in CLASSES.items()
    }
    for wf in wfs.values():
        wf.directory = directory
    with observe(Done(directory)):
        await runtime.launch()
        (directory / f"launched-{n}").touch()
        # The plan's runs start evenly over the killed incarnations (the kills find runs
        # in every phase); the last incarnation starts the rest and ends them all.
        last = (directory / "no-more-kills").exists()
        started = PLAN if last else PLAN[: -(-n * len(PLAN) // KILLS)]
        todo = [r for r in started if r not in finished(directory)]
        await asyncio.gather(*(follow(runtime, wfs, run_id) for run_id in todo))
        if not last:
            await asyncio.sleep(3600)  # killed by the test
    await audit(directory)
    (directory / "all-done").touch()
    await runtime.destroy()


async def audit(directory: Path) -> None:
    """Write DIR/recorded.json: when each step completion was recorded, by run.

    From each run's journal: the checkpoints (when taken, the step keys completed since
    the previous one) and the end, which records the last step's completion.
    """
    recorded: dict[str, list[tuple[int, list[str]]]] = {}
    for run_id in PLAN:
        entries = [e for batch in await _dbos_io.read_batches(run_id) for e in batch]
        recorded[run_id] = [
            (e["ns"], [f"{run_id}:{key}" for key in e.get("done", ())])
            for e in entries
            if e["k"] in {"ck", "end"}
        ]
    (directory / "recorded.json").write_text(json.dumps(recorded))


async def reference(directory: Path) -> dict[str, Any]:
    """The result of every planned run, run in memory without interruption."""
    wfs = {k: cls(timeout=None) for k, cls in CLASSES.items()}
    results: dict[str, Any] = {}
    for wf in wfs.values():
        wf.directory = directory
    for run_id in PLAN:
        kind = run_id.partition("-")[0]
        handler = wfs[kind].run(run_id=run_id, **start_args(run_id))
        if kind == "ask":
            handler.ctx.send_event(HumanResponseEvent(response=f"user {run_id}"))
        results[run_id] = await handler
    return results


def answer(line: str) -> None:
    """One line to the test."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def zygote(directory: Path) -> None:
    """Fork an incarnation per ``fork N`` line; reap it on ``wait P`` (see the docstring)."""
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "fork":
            pid = os.fork()
            if pid == 0:  # the incarnation: its own output file, then its life
                log = os.open(directory / f"out-{arg}.txt", os.O_WRONLY | os.O_CREAT, 0o600)
                os.dup2(log, 1)
                os.dup2(log, 2)
                code = 0
                try:
                    asyncio.run(incarnation(directory, int(arg)))
                except BaseException:  # noqa: BLE001 - reported in its output file
                    import traceback  # noqa: PLC0415

                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            answer(f"pid {pid}")
        elif command == "wait":
            _, status = os.waitpid(int(arg), 0)
            answer(f"exit {arg} {status}")
        elif command == "quit":
            return


if __name__ == "__main__":
    zygote(Path(sys.argv[1]))
