"""A process running the workflow of a file given on the command line, durably.

``python _durable_version_app.py DIR FILE MODE``: FILE defines ``Order`` (a workflow whose
step ``pack`` appends to DIR/effects.txt, then waits for the file DIR/gate); it is
imported as module ``orders`` whatever its name, as a deploy replaces a file. The
database is DIR/durable.sqlite. MODE ``start`` starts a run, writes its id to
DIR/run_id.txt and waits to be killed; ``resume`` launches the runtime (with
``on_version_mismatch=$ON_VERSION_MISMATCH``, "leave" by default), opens the gate,
re-attaches to the run and writes its result, or the error, to DIR/result-$TAG.txt.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from pathlib import Path

from stepstream.durable import DBOSRuntime
from stepstream.errors import WorkflowError


def load(path: Path) -> object:
    """Import ``path`` as module ``orders``."""
    spec = importlib.util.spec_from_file_location("orders", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["orders"] = module
    spec.loader.exec_module(module)
    return module


async def main(directory: Path, path: Path, mode: str) -> None:
    """Run ``mode`` (see the module docstring)."""
    policy = os.environ.get("ON_VERSION_MISMATCH", "leave")
    runtime = DBOSRuntime(f"sqlite:///{directory / 'durable.sqlite'}", on_version_mismatch=policy)
    order = load(path).Order(runtime=runtime, timeout=60)  # type: ignore[attr-defined]
    order.directory = directory
    await runtime.launch()
    if mode == "start":
        handler = order.run()
        (directory / "run_id.txt").write_text(handler.run_id)
        await asyncio.sleep(3600)  # the test kills the process
    (directory / "gate").touch()
    result: object
    try:
        handler = await runtime.handler((directory / "run_id.txt").read_text(), timeout=20)
        result = await handler
    except WorkflowError as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    (directory / f"result-{os.environ['TAG']}.txt").write_text(json.dumps(result))
    (directory / "gate").unlink()
    await runtime.destroy()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
