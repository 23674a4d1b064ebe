"""Pieces shared by the CLI commands: the telemetry-dir option and error output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

__all__ = ["DIR_OPTION", "EXIT_USAGE", "err_console", "fail"]

EXIT_USAGE = 2

DIR_OPTION = click.option(
    "--telemetry-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".stepstream"),
    show_default=True,
    help="Directory of the embedded trace and log files.",
)


def err_console() -> Console:
    """A console on stderr that never wraps (messages name files and lines)."""
    return Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console().print(f"[red]error[/]: {message}", highlight=False)
    sys.exit(code)
