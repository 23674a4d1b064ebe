"""What the database says about durable runs, for applications that list or serve them.

:meth:`DBOSRuntime.runs` answers from DBOS's workflow table and each run's recorded end
(its DBOS workflow's output is the journal's ``end`` entry), so it knows runs started by
other processes and before a restart: their status, times, trace and result.
:meth:`DBOSRuntime.events` reads a run's recorded stream back. A :class:`RunWatcher`
(``runtime.watch(...)``) learns when a run is resumed or released in this process.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stepstream._text import error_text
from stepstream.durable import _dbos_io
from stepstream.durable._park_io import PARKED
from stepstream.durable._stream import decode_event
from stepstream.events import (
    Event,
    StopEvent,
    WorkflowCancelledEvent,
    WorkflowFailedEvent,
    WorkflowTimedOutEvent,
)

if TYPE_CHECKING:
    from stepstream.context.serializers import BaseSerializer
    from stepstream.handler import WorkflowHandler

__all__ = [
    "ENDED",
    "GOING",
    "RunRecord",
    "RunState",
    "RunWatcher",
    "delete_run",
    "read_events",
    "read_events_from",
    "read_runs",
]

#: Where a durable run stands: executing (here or in another process), released while
#: it waits (parked), or ended (how).
RunState = Literal["running", "parked", "ok", "error", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One durable run as the database records it."""

    run_id: str
    workflow: str  # the workflow's workflow_name
    state: RunState
    started_at: datetime
    updated_at: datetime | None
    #: The terminal event of an ended run (None while it goes on, or if unreadable).
    terminal: StopEvent | None
    #: ``ErrorType: message`` of a failed, timed-out or cancelled run.
    error: str | None
    #: The trace the run's spans belong to (None if it was not traced).
    trace_id: str | None

    @property
    def ended(self) -> bool:
        """Whether the run has ended (for good)."""
        return self.state not in {"running", "parked"}


class RunWatcher(Protocol):
    """Told of the runs of this process that the runtime takes up or lets go (the server)."""

    def resumed(
        self, handler: WorkflowHandler, workflow: str, first_seq: int, trace_id: str | None
    ) -> None:
        """A run of ``workflow`` (its workflow_name) resumed here, after a restart or parked.

        ``first_seq`` is the seq its first live event will have; what came before is
        in the database (:meth:`DBOSRuntime.events`). ``trace_id``: the run's trace.
        """
        ...

    def parked(self, run_id: str) -> None:
        """A run of this process was released while it waited for events."""
        ...

    # Optional: ``failed_over(run_id, workflow, from_instance, to_instance)``, told when
    # this replica took over a run of a dead replica (its lease expired); the run then
    # resumes in whichever replica's queue takes it (there its ``resumed`` is told).


def _time(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _error(terminal: StopEvent | None) -> str | None:
    if isinstance(terminal, WorkflowFailedEvent):
        return f"{terminal.exception_type}: {terminal.message}"
    if isinstance(terminal, WorkflowTimedOutEvent | WorkflowCancelledEvent):
        return terminal.message
    return None


def _record(row: Any, serializers: dict[str, BaseSerializer]) -> RunRecord | None:
    """A RunRecord from one DBOS workflow status (None if it is not a stepstream run)."""
    args: Any = (row.input or {}).get("args") or ()
    if len(args) < 3:  # noqa: PLR2004 - (workflow, start, trace, started_ns)
        return None
    workflow, trace = str(args[0]), args[2]
    serializer = serializers.get(workflow)
    terminal: StopEvent | None = None
    error: str | None = None
    status = str(row.status)
    state: RunState = "running"
    if status == "SUCCESS" and isinstance(row.output, dict):
        state = row.output.get("status", "ok")
        if serializer is not None:
            try:
                event = decode_event(serializer, row.output["terminal"], f"run {row.workflow_id}")
            except Exception as exc:  # noqa: BLE001 - an unreadable result is said, not raised
                error = f"the result cannot be read: {error_text(exc)}"
            else:
                terminal = event if isinstance(event, StopEvent) else None
        error = error or _error(terminal)
    elif status in {"ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"}:
        state = "error"
        error = f"{type(row.error).__name__}: {error_text(row.error)}" if row.error else status
    elif status == "CANCELLED":
        state = "parked" if row.queue_name == PARKED else "cancelled"
        error = None if state == "parked" else "the run's DBOS workflow was cancelled"
    started = _time(row.created_at) or datetime.now(UTC)
    trace_id = trace[0] if isinstance(trace, list | tuple) and trace else None
    return RunRecord(
        run_id=row.workflow_id,
        workflow=workflow,
        state=state,
        started_at=started,
        updated_at=_time(row.updated_at),
        terminal=terminal,
        error=error,
        trace_id=trace_id,
    )


#: DBOS statuses of runs that have not ended (parked ones are CANCELLED).
GOING = ["PENDING", "ENQUEUED", "CANCELLED"]
#: DBOS statuses of runs that ended.
ENDED = ["SUCCESS", "ERROR", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"]


async def read_runs(
    serializers: dict[str, BaseSerializer],
    run_ids: list[str] | None = None,
    limit: int | None = None,
    statuses: list[str] | None = None,
) -> list[RunRecord]:
    """The runs ``run_ids`` (or all, the newest ``limit``) in ``statuses``, oldest first."""
    dbos = _dbos_io.dbos_instance()
    if dbos is None:
        return []
    sys_db = dbos._sys_db  # noqa: SLF001 - a read outside any workflow context

    def read() -> list[Any]:
        return list(
            sys_db.list_workflows(
                workflow_ids=run_ids,
                name=_dbos_io.WORKFLOW,
                status=statuses,
                limit=limit,
                sort_desc=True,
            )
        )

    rows = await asyncio.get_running_loop().run_in_executor(None, read)
    return [r for r in (_record(row, serializers) for row in reversed(rows)) if r is not None]


async def read_events(
    serializer: BaseSerializer, run_id: str, after: int
) -> list[tuple[int, Event, bool]]:
    """The recorded events of run ``run_id`` with seq > ``after``, then its terminal one."""
    found, _ = await read_events_from(serializer, run_id, after, 0)
    return found


async def read_events_from(
    serializer: BaseSerializer, run_id: str, after: int, offset: int
) -> tuple[list[tuple[int, Event, bool]], int]:
    """As :func:`read_events`, from the journal's row ``offset`` on; and the next offset."""
    where = f"the journal of run {run_id}"
    found: list[tuple[int, Event, bool]] = []
    batches, following = await _dbos_io.read_batches_from(run_id, offset)
    for batch in batches:
        for entry in batch:
            kind = entry["k"]
            if kind == "ev" and entry["seq"] > after:
                found.append((entry["seq"], decode_event(serializer, entry["ev"], where), False))
            elif kind == "end" and entry["seq"] > after:
                found.append(
                    (entry["seq"], decode_event(serializer, entry["terminal"], where), True)
                )
    return found, following


async def delete_run(run_id: str) -> None:
    """Delete run ``run_id`` (its DBOS workflow, journal and inbox) from the database."""
    dbos = _dbos_io.dbos_instance()
    if dbos is None:
        return
    sys_db = dbos._sys_db  # noqa: SLF001 - outside any workflow context
    await asyncio.get_running_loop().run_in_executor(None, sys_db.delete_workflows, [run_id])
