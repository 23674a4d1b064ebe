"""``stepstream run``: run a workflow from a file and watch it live."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.text import Text

from stepstream._visible import visible
from stepstream.cli._common import EXIT_USAGE, WarningLines, labelled, shown
from stepstream.cli._live import LiveModel, fields_of, plain_line, result_text
from stepstream.cli._load import load_workflow
from stepstream.errors import (
    WorkflowCancelledError,
    WorkflowError,
    WorkflowTimeoutError,
    WorkflowValidationError,
)
from stepstream.events import HumanResponseEvent, InputRequiredEvent, StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.telemetry import observe
from stepstream.telemetry.setup import configure_telemetry

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "parse_inputs",
    "run_file",
]

EXIT_FAILED = 1

EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad command-line input; the message says which."""


def parse_inputs(
    pairs: tuple[str, ...], input_json: str | None, arguments: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Merge ``--input-json``, ``--input key=value`` and ``key=value`` arguments.

    Values are parsed as JSON if they can be; later ones win.
    """
    inputs: dict[str, Any] = {}
    if input_json is not None:
        try:
            loaded = json.loads(input_json)
        except ValueError as exc:
            msg = f"--input-json is not valid JSON: {exc}"
            raise UsageError(msg) from exc
        if not isinstance(loaded, dict):
            msg = '--input-json must be a JSON object, e.g. \'{"topic": "whales"}\''
            raise UsageError(msg)
        inputs.update(loaded)
    for where, pair in [*(("--input", p) for p in pairs), *(("argument", a) for a in arguments)]:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            msg = (
                f"--input {pair!r} is not key=value"
                if where == "--input"
                else f"KEY=VALUE argument {pair!r} is not key=value (the workflow comes first)"
            )
            raise UsageError(msg)
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


def run_file(  # noqa: PLR0917 - the command's options, passed through
    target: str,
    inputs: dict[str, Any],
    timeout: float | None,
    telemetry_dir: Path,
    console: Console,
    err: Console,
) -> int:
    """Run the workflow in ``target`` and return the process exit code."""
    cls = load_workflow(target)
    # Telemetry reports its own failures on the stepstream logger: one line each, no traceback.
    warnings = WarningLines()
    logging.getLogger("stepstream").addHandler(warnings)
    handle = configure_telemetry(directory=telemetry_dir)
    try:
        return asyncio.run(_main(cls, inputs, timeout, console, err))
    except KeyboardInterrupt:
        err.print(labelled("interrupted", "red", "the run was cancelled"))
        return EXIT_INTERRUPTED
    finally:
        handle.shutdown()
        logging.getLogger("stepstream").removeHandler(warnings)
        where = handle.endpoint or (str(handle.directory) if handle.directory else "nowhere")
        err.print(Text.assemble("telemetry: ", shown(where)))


async def _main(
    cls: type[Any], inputs: dict[str, Any], timeout: float | None, console: Console, err: Console
) -> int:
    workflow = cls(timeout=timeout) if timeout is not None else cls()
    model = LiveModel(workflow)
    try:
        with observe(model):
            handler: WorkflowHandler = workflow.run(**inputs)
    except WorkflowValidationError as exc:
        err.print(labelled("error", "red", exc))
        return EXIT_USAGE
    try:
        if console.is_terminal:
            await _watch_live(handler, model, console)
        else:
            await _watch_plain(handler, model, console)
    except asyncio.CancelledError:
        await handler.cancel_run()
        raise
    try:
        result = await handler
    except (WorkflowError, Exception) as exc:  # noqa: BLE001 - reported, mapped to an exit code
        return _report_failure(exc, model, err)
    value = result.result if type(result) is StopEvent else result
    console.print(Text.assemble("Result: ", shown(result_text(value), multiline=True)))
    console.print(_ids(model), soft_wrap=True)
    return 0


async def _watch_live(handler: WorkflowHandler, model: LiveModel, console: Console) -> None:
    with Live(model, console=console, refresh_per_second=12, transient=False) as live:
        async for event in handler.stream_events():
            if isinstance(event, InputRequiredEvent):
                live.stop()
                await _answer(handler, event, console)
                live.start()


async def _watch_plain(handler: WorkflowHandler, model: LiveModel, console: Console) -> None:
    started = time.monotonic()
    async for event in handler.stream_events():
        step = model.writers.pop(id(event), "")
        plain_line(console, time.monotonic() - started, step, event)
        if isinstance(event, InputRequiredEvent):
            await _answer(handler, event, console)


async def _answer(handler: WorkflowHandler, event: InputRequiredEvent, console: Console) -> None:
    data = fields_of(event)
    keys = [k for k in ("prefix", "prompt", "question") if k in data]
    prompt = visible(data[keys[0]], multiline=True).rstrip() if keys else ""
    console.print(Text((prompt or "input required") + " "), end="")
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        console.print("\nno answer on standard input; cancelling the run", markup=False)
        await handler.cancel_run()
        return
    if not sys.stdin.isatty():
        console.print(markup=False, highlight=False)  # the answer was not echoed: end the line
    handler.ctx.send_event(HumanResponseEvent(response=line.rstrip("\n")))


def _ids(model: LiveModel) -> Text:
    return shown(f"run_id {model.run_id}  trace_id {model.trace_id or '-'}")


def _report_failure(error: BaseException, model: LiveModel, err: Console) -> int:
    err.print(labelled(visible(type(error).__name__), "red", error))
    err.print(_ids(model), soft_wrap=True)
    if isinstance(error, WorkflowTimeoutError):
        return EXIT_TIMEOUT
    if isinstance(error, WorkflowCancelledError):
        return EXIT_INTERRUPTED
    return EXIT_FAILED
