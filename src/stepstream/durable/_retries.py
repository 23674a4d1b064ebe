"""Retries across a restart: the journal records each retry decision at the failure.

A retry entry ``{"k": "rt", "step", "inv", "attempt", "due", "first", "failed", "error",
"ev", "ns"}`` says: attempt ``attempt`` of invocation ``inv`` of ``step`` failed with
``error`` at ``failed``; the next attempt is due at ``due`` (wall clock, ns); the
invocation's first attempt began at ``first``; ``ev`` is a digest of its input event.
After a restart, the invocation (re-run from the last checkpoint) goes on from there:
:class:`RestoredRetries` hands its state to the runtime as the invocation begins.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from stepstream._journal import RetryState
from stepstream._text import error_text
from stepstream.errors import WorkflowRuntimeError

if TYPE_CHECKING:
    from stepstream._instrument import StepInfo
    from stepstream.context.serializers import BaseSerializer
    from stepstream.events import Event

__all__ = ["RestoredRetries", "retry_entry"]


def _digest(serializer: BaseSerializer, event: Event) -> str:
    """Which event an invocation had: its invocation number alone may be reused."""
    text = serializer.serialize(event)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def retry_entry(
    inv: StepInfo, delay: float, error: BaseException, serializer: BaseSerializer
) -> dict[str, Any]:
    """The journal entry of the retry decided after attempt ``inv`` failed with ``error``."""
    now = time.time_ns()
    first = inv.retry[0] if inv.retry is not None else inv.start_ns
    return {
        "k": "rt",
        "step": inv.step,
        "inv": inv.invocation,
        "attempt": inv.attempt,
        "due": now + int(delay * 1e9),
        "first": first,
        "failed": now,
        "error": f"{type(error).__name__}: {error_text(error)}",
        "ev": _digest(serializer, inv.event),
        "ns": now,
    }


class RestoredRetries:
    """The last retry entry of each invocation, read back from a run's journal."""

    def __init__(self, entries: list[dict[str, Any]], serializer: BaseSerializer) -> None:
        self._serializer = serializer
        self._by_key = {(e["step"], e["inv"]): e for e in entries if e["k"] == "rt"}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def take(self, step: str, invocation: int, event: Event) -> RetryState | None:
        """The retry state of that invocation, once (None if it had none)."""
        entry = self._by_key.pop((step, invocation), None)
        if entry is None or entry["ev"] != _digest(self._serializer, event):
            return None
        error = WorkflowRuntimeError(
            f"attempt {entry['attempt']} of step {step!r} failed before the run's process "
            f"stopped: {entry['error']}"
        )
        return RetryState(entry["attempt"], entry["due"], entry["first"], entry["failed"], error)
