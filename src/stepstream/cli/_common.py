"""Pieces shared by the CLI commands: the telemetry-dir option, user text and error output.

Whatever came from user data (payloads, results, messages, names, paths, telemetry files)
is printed as a rich ``Text`` built by :func:`shown`: never parsed as markup, its control
characters shown as escapes.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.text import Text

from stepstream._visible import visible

__all__ = [
    "DIR_OPTION",
    "EXIT_USAGE",
    "ServerError",
    "WarningLines",
    "err_console",
    "fail",
    "labelled",
    "shown",
]

EXIT_USAGE = 2

DIR_OPTION = click.option(
    "--telemetry-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".stepstream"),
    show_default=True,
    help="Directory of the embedded trace and log files.",
)


class ServerError(Exception):
    """A stepstream server could not be reached or refused a request; the message says why."""


def shown(value: object, style: str = "", *, multiline: bool = False) -> Text:
    """User data as rich text: never markup, control characters escaped (see ``visible``)."""
    return Text(visible(value, multiline=multiline), style=style)


def labelled(label: str, style: str, message: object) -> Text:
    """``label: message`` with the label in ``style``; the message is user data."""
    return Text.assemble((label, style), ": ", shown(message, multiline=True))


def err_console() -> Console:
    """A console on stderr that never wraps (messages name files and lines)."""
    return Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console().print(labelled("error", "red", message))
    sys.exit(code)


class WarningLines(logging.Handler):
    """Prints each record of the ``stepstream`` logger as one ``warning:`` line on stderr.

    A run's telemetry reports its own failures there (with the exception); the command
    shows the message and the exception's type and text, not a traceback.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._console = err_console()

    def emit(self, record: logging.LogRecord) -> None:
        """Print the record's message, then ``(ErrorType: message)`` if it carries one."""
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                error = record.exc_info[1]
                message += f" ({type(error).__name__}: {visible(error)})"
            self._console.print(labelled("warning", "yellow", visible(message)))
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
