r"""``Workflow(verbose=True)``: one concise stderr line per step start, step end and event.

Names and error messages are user data: each line is printed with its control characters
shown as escapes (``\x1b``), so a payload cannot drive the terminal.
"""

from __future__ import annotations

import sys
import time

from stepstream._instrument import Observer, RunInfo, Status, StepInfo
from stepstream._text import error_text
from stepstream._visible import visible
from stepstream.events import Event

__all__ = ["VerbosePrinter"]


class VerbosePrinter(Observer):
    """Prints to whatever ``sys.stderr`` is at the time of each line."""

    def step_started(self, inv: StepInfo) -> None:
        """Print ``step NAME started (EventType)``."""
        retry = f", attempt {inv.attempt}" if inv.attempt > 1 else ""
        self._print(f"step {inv.step} started ({type(inv.event).__name__}{retry})")

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """Print ``step NAME finished in X ms -> EventType``."""
        ms = (time.time_ns() - inv.start_ns) / 1e6
        out = type(result).__name__ if result is not None else "nothing"
        self._print(f"step {inv.step} finished in {ms:.1f} ms -> {out}")

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """Print ``step NAME failed: Error: message`` (and whether it is retried)."""
        then = " (will retry)" if will_retry else ""
        self._print(f"step {inv.step} {status}: {type(error).__name__}: {error_text(error)}{then}")

    def event_streamed(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """Print ``stream #SEQ EventType from STEP``."""
        source = inv.step if inv is not None else "caller"
        self._print(f"stream #{seq} {type(event).__name__} from {source}")

    @staticmethod
    def _print(line: str) -> None:
        print(f"[stepstream] {visible(line)}", file=sys.stderr, flush=True)  # noqa: T201 - verbose mode
