"""A process running durable workflows for tests/test_durable_ops.py: retries, timeouts, cancel.

``python _durable_ops_app.py DIR MODE``: the database is ``$STEPSTREAM_TEST_DATABASE``, or
DIR/durable.sqlite. Steps append ``step|step_key|attempt|pid|time_ns`` to DIR/effects.txt
(a side effect outside the process); an observer appends ``retry|step|attempt|delay``
to DIR/retries.txt once a retry is recorded. MODE is KIND-PHASE, KIND ``retry`` (Flaky)
``timeout`` (Sleepy; its timeout is $SLEEPY_TIMEOUT, 6 s by default), ``abrupt``
(Abrupt, whose step kills its process the first time), ``race`` (Racing, whose slow
step kills its process while the run ends) or ``ending`` (Ending, whose process is
killed once the run's end is recorded, in ``ending-start``). PHASE ``start``
starts a run, writes its id to DIR/run_id.txt and waits to be killed; ``cancel`` does
too, but cancels the run with cancel_run() once its step began, then writes
DIR/cancelled.txt; ``hold`` starts a run and waits for its end. ``remote`` cancels the
run with runtime.cancel(); ``check`` writes what re-attaching to it says; any other
re-attaches to it. What became of the run goes to DIR/result-MODE.txt.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.durable import DBOSRuntime
from stepstream.errors import WorkflowError
from stepstream.events import StartEvent
from stepstream.events import StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.retry_policy import retry_policy
from stepstream.retry_policy import stop_after_attempt
from stepstream.retry_policy import wait_fixed
from stepstream.telemetry import Observer
from stepstream.telemetry import StepInfo
from stepstream.telemetry import observe

#: The delay between two attempts of Flaky's step, in seconds.
RETRY_DELAY = 4.0


def effect(directory: Path, ctx: Context, name: str, attempt: int) -> None:
    """Record that an attempt of step ``name`` began, outside the process."""
    with (directory / "effects.txt").open("a", encoding="utf-8") as out:
        out.write(f"{name}|{ctx.step_key}|{attempt}|{os.getpid()}|{time.time_ns()}\n")


class Flaky(Workflow):
    """One step that fails its first two attempts; retried every RETRY_DELAY seconds."""

    directory: Path

    @step(retry_policy=retry_policy(wait=wait_fixed(RETRY_DELAY), stop=stop_after_attempt(5)))
    async def flaky(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Fail on attempts 1 and 2, succeed on the third with its retry number."""
        info = ctx.retry_info()
        effect(self.directory, ctx, "flaky", info.retry_number + 1)
        if info.retry_number < 2:
            msg = f"attempt {info.retry_number + 1} fails"
            raise ValueError(msg)
        last = info.last_exception
        return StopEvent(result={"retries": info.retry_number, "last": str(last)})


class Sleepy(Workflow):
    """One step that sleeps longer than the run's timeout."""

    directory: Path

    @step
    async def nap(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Sleep a minute."""
        effect(self.directory, ctx, "nap", 1)
        await asyncio.sleep(60)
        return StopEvent(result="woke")


class Abrupt(Workflow):
    """One step that kills its own process (kill -9) the first time it runs."""

    directory: Path

    @step
    async def only(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Record, then die once; the second time, end."""
        effect(self.directory, ctx, "only", 1)
        died = self.directory / "died"
        if not died.exists():
            died.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return StopEvent(result="survived")


class Racing(Workflow):
    """Two steps take the start event: ``fast`` ends the run while ``slow`` still works.

    The first time, ``slow`` takes 0.5 s to stop when cancelled, then kills its process.
    """

    directory: Path

    @step
    async def fast(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """End the run after 0.2 s."""
        effect(self.directory, ctx, "fast", 1)
        await asyncio.sleep(0.2)
        return StopEvent(result="fast")

    @step
    async def slow(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """End the run after 30 s, unless cancelled first."""
        effect(self.directory, ctx, "slow", 1)
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            died = self.directory / "died"
            if not died.exists():
                died.touch()
                await asyncio.sleep(0.5)  # stopping takes a while...
                os.kill(os.getpid(), signal.SIGKILL)  # ... and the process dies meanwhile
            raise
        return StopEvent(result="slow")


class Ending(Workflow):
    """One step; the app's observer may kill the process once its end is recorded."""

    directory: Path

    @step
    async def last(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """End at once."""
        effect(self.directory, ctx, "last", 1)
        return StopEvent(result="ended")


class KillWhenTold(Observer):
    """Kills the process when step ``last`` is told complete: its run's end is recorded,
    DBOS's own record of it not yet."""

    def step_finished(self, inv: StepInfo, result: object) -> None:
        """Die."""
        if inv.step == "last":
            os.kill(os.getpid(), signal.SIGKILL)


class RetryLog(Observer):
    """Appends a line per recorded retry (step_retry is told once the retry is recorded)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """One line per retry."""
        with (self.directory / "retries.txt").open("a", encoding="utf-8") as out:
            out.write(f"retry|{inv.step}|{inv.attempt}|{delay}|{time.time_ns()}\n")


async def main(directory: Path, mode: str) -> None:
    """Run ``mode`` (see the module docstring)."""
    url = os.environ.get("STEPSTREAM_TEST_DATABASE") or f"sqlite:///{directory / 'durable.sqlite'}"
    runtime = DBOSRuntime(url)
    flaky = Flaky(runtime=runtime, timeout=120)
    sleepy = Sleepy(runtime=runtime, timeout=float(os.environ.get("SLEEPY_TIMEOUT", "6")))
    abrupt = Abrupt(runtime=runtime, timeout=60)
    racing = Racing(runtime=runtime, timeout=60)
    ending = Ending(runtime=runtime, timeout=60)
    for wf in (flaky, sleepy, abrupt, racing, ending):
        wf.directory = directory
    workflows: dict[str, Workflow] = {
        "retry": flaky,
        "timeout": sleepy,
        "abrupt": abrupt,
        "race": racing,
        "ending": ending,
    }
    killer = [KillWhenTold()] if mode == "ending-start" else []
    with observe(RetryLog(directory), *killer):
        await runtime.launch()
        await run_mode(directory, mode, runtime, workflows)
    await runtime.destroy()


async def run_mode(
    directory: Path, mode: str, runtime: DBOSRuntime, workflows: dict[str, Workflow]
) -> None:
    """The part of ``main`` that differs by mode."""
    kind, _, phase = mode.partition("-")
    run_id_file = directory / "run_id.txt"
    if phase in {"start", "cancel", "hold"}:
        handler = workflows[kind].run()
        run_id_file.write_text(handler.run_id)
        if phase == "cancel":  # cancel_run() once the step began, then wait to be killed
            while not (directory / "effects.txt").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            await handler.cancel_run()
            (directory / "cancelled.txt").write_text(str(handler.done()))
        if phase != "hold":
            await asyncio.sleep(3600)  # the test kills the process
    elif phase == "remote":  # cancel the run another process holds, or none does
        await runtime.cancel(run_id_file.read_text())
        (directory / f"result-{mode}.txt").write_text("cancelled")
        return
    elif phase == "check":  # what re-attaching says, once the launch has had time to resume
        await asyncio.sleep(2)
        try:
            await runtime.handler(run_id_file.read_text(), timeout=1)
        except WorkflowError as exc:
            (directory / f"result-{mode}.txt").write_text(json.dumps(str(exc)))
        return
    else:
        (directory / f"resumed-{mode}.txt").write_text(str(time.time_ns()))
        try:
            handler = await runtime.handler(run_id_file.read_text())
        except WorkflowError as exc:
            (directory / f"result-{mode}.txt").write_text(json.dumps(str(exc)))
            return
    seen = asyncio.create_task(terminal(handler))
    try:
        result: object = await handler
    except WorkflowError as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    (directory / f"ended-{mode}.txt").write_text(str(time.time_ns()))
    (directory / f"result-{mode}.txt").write_text(json.dumps(result))
    (directory / f"terminal-{mode}.txt").write_text(await seen)


async def terminal(handler: WorkflowHandler) -> str:
    """The type of the last event of the run's stream."""
    last = ""
    async for event in handler.stream_events(after=-1):
        last = type(event).__name__
    return last


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
