"""The ``stepstream`` command: run workflows live, review traces and logs, draw flows."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import click
from rich.console import Console

from stepstream.cli._common import DIR_OPTION, ServerError, err_console, fail
from stepstream.cli._load import LoadError
from stepstream.cli._run import UsageError, parse_inputs, run_file
from stepstream.telemetry.setup import TelemetryFileError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stepstream")
def main() -> None:
    """Run event-driven workflows live, and review their traces and logs."""


def _remote() -> ModuleType:
    """The client commands' module (it needs httpx, from the ``server`` extra)."""
    try:
        return importlib.import_module("stepstream.cli._remote")
    except ImportError as exc:
        fail(
            f"stepstream needs the server extra to talk to a server ({exc.name} is missing): "
            "pip install 'stepstream[server]'"
        )


_SERVER_TOKEN = click.option(
    "--token",
    envvar="STEPSTREAM_SERVER_TOKEN",
    default=None,
    help="The server's bearer token (or $STEPSTREAM_SERVER_TOKEN).",
)


@main.command()
@click.argument("target", metavar="FILE.py[:WorkflowClass]|NAME")
@click.argument("arguments", nargs=-1, metavar="[KEY=VALUE]...")
@click.option(
    "--input",
    "pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="A start event field (JSON values are parsed).",
)
@click.option("--input-json", metavar="JSON", help="Start event fields as one JSON object.")
@click.option(
    "--timeout", type=float, default=None, help="Run timeout in seconds (default: the workflow's)."
)
@click.option(
    "--server",
    metavar="URL",
    default=None,
    help="Run the workflow served as NAME on this stepstream server, and watch it.",
)
@_SERVER_TOKEN
@DIR_OPTION
def run(  # noqa: PLR0917 - click passes each option as an argument
    target: str,
    arguments: tuple[str, ...],
    pairs: tuple[str, ...],
    input_json: str | None,
    timeout: float | None,
    server: str | None,
    token: str | None,
    telemetry_dir: Path,
) -> None:
    """Run a workflow and watch its steps and streamed events live.

    TARGET is a file (and class) to run here, or with --server the name a server serves a
    workflow under. Start event fields: KEY=VALUE arguments, --input, --input-json.
    """
    try:
        inputs = parse_inputs(pairs, input_json, arguments)
        if server is None:
            code = run_file(target, inputs, timeout, telemetry_dir, Console(), err_console())
        elif timeout is not None:
            fail("--timeout is for a run in this process; a served workflow has its own timeout")
        else:
            code = _remote().run_remote(server, target, inputs, token, Console(), err_console())
    except (LoadError, UsageError, TelemetryFileError, ServerError) as exc:
        fail(str(exc))
    sys.exit(code)


@main.command()
@click.argument("url")
@click.argument("handler_id")
@_SERVER_TOKEN
def watch(url: str, handler_id: str, token: str | None) -> None:
    """Watch the run HANDLER_ID on the stepstream server at URL live, until it ends."""
    try:
        code = _remote().watch_remote(url, handler_id, token, Console(), err_console())
    except ServerError as exc:
        fail(str(exc))
    sys.exit(code)


from stepstream.cli._commands import draw, logs, traces  # noqa: E402 - registered on main
from stepstream.server._command import serve  # noqa: E402 - loads the server extra when run

main.add_command(traces)
main.add_command(logs)
main.add_command(draw)
main.add_command(serve)
