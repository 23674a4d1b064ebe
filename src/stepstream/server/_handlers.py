"""Handlers: what the server knows of each run it started, kept in a replaceable store.

A handler is the HTTP face of one run (llama-agents-server's ``HandlerData``): its id,
workflow, status, times, result or error, and, on stepstream's side, its trace id and
its event log. :class:`HandlerStore` is the seam a durable store replaces; the default
:class:`MemoryHandlerStore` keeps running handlers and the most recent finished ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from stepstream.events import Event
from stepstream.handler import WorkflowHandler
from stepstream.server._envelope import envelope_dict
from stepstream.server._log import RunLog

__all__ = ["HandlerRecord", "HandlerStatus", "HandlerStore", "MemoryHandlerStore"]

#: A handler's status, as llama-agents-server names them.
HandlerStatus = Literal["running", "completed", "failed", "cancelled"]
STATUSES: tuple[HandlerStatus, ...] = ("running", "completed", "failed", "cancelled")


def now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


@dataclass(eq=False)
class HandlerRecord:
    """One run started by the server, from its start until the store forgets it."""

    handler_id: str
    workflow_name: str
    run_id: str
    log: RunLog
    #: The run's step lifecycle frames (``GET /handlers/{id}/steps``).
    steps: RunLog = field(default_factory=RunLog)
    handler: WorkflowHandler | None = None
    #: The workflow's name on its spans and log lines (the class name unless renamed).
    traced_name: str = ""
    trace_id: str | None = None
    status: HandlerStatus = "running"
    started_at: datetime = field(default_factory=now)
    updated_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    result: Event | None = None

    @property
    def finished(self) -> bool:
        """True once the run has ended (any status but running)."""
        return self.status != "running"

    def finish(self, status: HandlerStatus, result: Event | None, error: str | None) -> None:
        """Record the run's end."""
        self.status = status
        self.result = result
        self.error = error
        self.updated_at = self.completed_at = now()
        self.handler = None  # the run's objects can go; the log and result stay

    def to_json(self) -> dict[str, Any]:
        """The peer's ``HandlerData`` shape, plus ``trace_id`` (the run's trace)."""
        return {
            "handler_id": self.handler_id,
            "workflow_name": self.workflow_name,
            "run_id": self.run_id,
            "error": self.error,
            "result": envelope_dict(self.result) if self.result is not None else None,
            "result_unreadable": False,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "trace_id": self.trace_id,
        }


class HandlerStore(Protocol):
    """Where handlers are kept; a durable store (issue 16) implements the same methods."""

    def add(self, record: HandlerRecord) -> None:
        """Keep a new handler."""
        ...

    def get(self, handler_id: str) -> HandlerRecord | None:
        """The handler with this id, or None."""
        ...

    def query(
        self, statuses: Iterable[str] | None = None, workflows: Iterable[str] | None = None
    ) -> list[HandlerRecord]:
        """Handlers in start order, filtered by status and workflow name (None: any)."""
        ...

    def finished(self, record: HandlerRecord) -> None:
        """Told once a handler's run has ended (its record is final)."""
        ...

    def remove(self, handler_id: str) -> bool:
        """Forget a handler; False if there was none."""
        ...


class MemoryHandlerStore:
    """Handlers in memory: every running one, and the last ``keep_finished`` finished ones."""

    def __init__(self, keep_finished: int = 1000) -> None:
        self.keep_finished = keep_finished
        self._records: dict[str, HandlerRecord] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()

    def add(self, record: HandlerRecord) -> None:
        """Keep a new handler."""
        self._records[record.handler_id] = record

    def get(self, handler_id: str) -> HandlerRecord | None:
        """The handler with this id, or None."""
        return self._records.get(handler_id)

    def query(
        self, statuses: Iterable[str] | None = None, workflows: Iterable[str] | None = None
    ) -> list[HandlerRecord]:
        """Handlers in start order, filtered by status and workflow name (None: any)."""
        wanted_status = None if statuses is None else set(statuses)
        wanted_name = None if workflows is None else set(workflows)
        return [
            r
            for r in self._records.values()
            if (wanted_status is None or r.status in wanted_status)
            and (wanted_name is None or r.workflow_name in wanted_name)
        ]

    def finished(self, record: HandlerRecord) -> None:
        """Count the handler among the finished ones; forget the oldest beyond the bound."""
        if record.handler_id not in self._records:
            return
        self._finished[record.handler_id] = None
        while len(self._finished) > self.keep_finished:
            oldest, _ = self._finished.popitem(last=False)
            self._records.pop(oldest, None)

    def remove(self, handler_id: str) -> bool:
        """Forget a handler; False if there was none."""
        self._finished.pop(handler_id, None)
        return self._records.pop(handler_id, None) is not None
