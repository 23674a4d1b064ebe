"""The ``stepstream`` command: run workflows live, review traces and logs, draw flows."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from stepstream.cli._common import DIR_OPTION, err_console, fail
from stepstream.cli._load import LoadError
from stepstream.cli._run import UsageError, parse_inputs, run_file
from stepstream.telemetry.setup import TelemetryFileError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stepstream")
def main() -> None:
    """Run event-driven workflows live, and review their traces and logs."""


@main.command()
@click.argument("target", metavar="FILE.py[:WorkflowClass]")
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
@DIR_OPTION
def run(
    target: str,
    pairs: tuple[str, ...],
    input_json: str | None,
    timeout: float | None,
    telemetry_dir: Path,
) -> None:
    """Run a workflow and watch its steps and streamed events live."""
    try:
        inputs = parse_inputs(pairs, input_json)
        code = run_file(target, inputs, timeout, telemetry_dir, Console(), err_console())
    except (LoadError, UsageError, TelemetryFileError) as exc:
        fail(str(exc))
    sys.exit(code)


from stepstream.cli._commands import draw, logs, traces  # noqa: E402 - registered on main
from stepstream.server._command import serve  # noqa: E402 - loads the server extra when run

main.add_command(traces)
main.add_command(logs)
main.add_command(draw)
main.add_command(serve)
