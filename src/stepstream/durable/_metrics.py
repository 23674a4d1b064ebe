"""The durable runtime's process-wide metrics: its database's outages, runs taken over.

A run's own metrics go through the instrumentation seam; these belong to the process (a
replica), so they are recorded on the global meter, made on first use. Recording never
raises: telemetry does not break a take-over or the journal's writer.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from opentelemetry import metrics

from stepstream._version import __version__
from stepstream.telemetry import attributes as attrs

__all__ = ["count_failed_over", "database_away", "database_back"]

_made: dict[str, Any] = {}
_lock = threading.Lock()  # the journal's writer thread and the event loop both record


def _instrument(name: str) -> Any:
    found = _made.get(name)
    if found is None:
        with _lock:
            found = _made.get(name)
            if found is None:
                meter = metrics.get_meter("stepstream", __version__)
                found = _made[name] = _MAKERS[name](meter)
    return found


_MAKERS = {
    attrs.METRIC_RUNS_FAILED_OVER: lambda meter: meter.create_counter(
        attrs.METRIC_RUNS_FAILED_OVER,
        unit="{run}",
        description="Durable runs of a dead replica taken over by another",
    ),
    attrs.METRIC_DATABASE_OUTAGES: lambda meter: meter.create_counter(
        attrs.METRIC_DATABASE_OUTAGES,
        unit="{outage}",
        description="Times the durable database could not be written; the journals waited",
    ),
    attrs.METRIC_DATABASE_OUTAGE_DURATION: lambda meter: meter.create_histogram(
        attrs.METRIC_DATABASE_OUTAGE_DURATION,
        unit="s",
        description="How long the durable database could not be written, each time",
    ),
}


def count_failed_over(workflow: str) -> None:
    """Add one to ``stepstream.runs.failed_over`` (by workflow)."""
    with contextlib.suppress(Exception):
        _instrument(attrs.METRIC_RUNS_FAILED_OVER).add(1, {attrs.WORKFLOW: workflow})


def database_away() -> None:
    """The journal's writer found the database away: one more outage."""
    with contextlib.suppress(Exception):
        _instrument(attrs.METRIC_DATABASE_OUTAGES).add(1)


def database_back(seconds: float) -> None:
    """The database is written again, ``seconds`` after the outage began."""
    with contextlib.suppress(Exception):
        _instrument(attrs.METRIC_DATABASE_OUTAGE_DURATION).record(seconds)
