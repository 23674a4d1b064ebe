"""A process with a durable run that is answered, for tests/test_durable_inputs.py to kill.

``python _durable_inputs_app.py DIR MODE``: the database is DIR/durable.sqlite. The
workflow asks for a name, and once answered records ``answered|NAME|pid`` in
DIR/effects.txt and waits for the file DIR/gate before it ends with a greeting.

MODE ``answer``: start a run (its id in DIR/run_id.txt), answer the question with
``await handler.send_event(...)``, then touch DIR/acked (the answer was acknowledged)
and wait to be killed. ``resume``: launch (the run resumes), open the gate, write the
result to DIR/result.txt, without sending anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from stepstream import Context
from stepstream import Workflow
from stepstream import step
from stepstream.durable import DBOSRuntime
from stepstream.events import HumanResponseEvent
from stepstream.events import InputRequiredEvent
from stepstream.events import StartEvent
from stepstream.events import StopEvent


class AsksThenWorks(Workflow):
    """Asks, then works until the gate opens."""

    def __init__(self, directory: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.directory = directory

    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        """Ask, record the answer outside the process, wait for the gate, greet."""
        answer = await ctx.wait_for_event(
            HumanResponseEvent, InputRequiredEvent(prefix="name?"), timeout=None
        )
        name = answer.get("response")
        with (self.directory / "effects.txt").open("a", encoding="utf-8") as out:
            out.write(f"answered|{name}|{os.getpid()}\n")
        while not (self.directory / "gate").exists():  # noqa: ASYNC110 - the test opens it
            await asyncio.sleep(0.01)
        return StopEvent(result=f"hello {name}")


async def main(directory: Path, mode: str) -> None:
    """Run ``mode`` (see the module docstring)."""
    runtime = DBOSRuntime(f"sqlite:///{directory / 'durable.sqlite'}")
    wf = AsksThenWorks(directory, runtime=runtime, timeout=None)
    await runtime.launch()
    if mode == "answer":
        handler = wf.run()
        (directory / "run_id.txt").write_text(handler.run_id)
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                await handler.send_event(HumanResponseEvent(response="ada"))
                (directory / "acked").touch()
        await handler
    elif mode == "resume":
        handler = await runtime.handler((directory / "run_id.txt").read_text())
        (directory / "gate").touch()
        (directory / "result.txt").write_text(json.dumps(await handler))
    await runtime.destroy()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
