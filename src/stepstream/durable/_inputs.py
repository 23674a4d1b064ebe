"""Events the caller sends into a durable run: recorded when they arrive.

``handler.ctx.send_event(ev)`` (and the server's ``POST /events/{id}``) on a durable run
queues an ``{"k": "in", "ev", "to", "ns"}`` entry in the run's journal before the event
is routed; the journal's next batch records it (one transaction), and ``await
handler.send_event(ev)`` returns once it has. After a crash, the entries recorded after
the last checkpoint are sent again to the restored run (those before it are in the
checkpoint: held, queued, or taken by a step's wait, see ``RunQueries.save``), so an
acknowledged event is never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from stepstream._text import error_text
from stepstream.context.serializers import BaseSerializer
from stepstream.durable._stream import decode_event
from stepstream.errors import WorkflowError, WorkflowRuntimeError

if TYPE_CHECKING:
    from stepstream._runtime import Run
    from stepstream.events import Event

__all__ = ["CallerEvents", "in_entry", "redeliver", "unapplied"]

_log = logging.getLogger("stepstream")


class CallerEvents:
    """The caller's events of one run: how many were queued, how many are recorded."""

    __slots__ = ("_commit", "_error", "_loop", "queued", "recorded", "run_id")

    def __init__(self, run_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.run_id = run_id
        self._loop = loop
        self.queued = 0
        self.recorded = 0
        self._commit: asyncio.Future[None] | None = None
        self._error: WorkflowRuntimeError | None = None

    def entry(self, serializer: BaseSerializer, event: Event, target: str | None) -> dict[str, Any]:
        """The journal entry of ``event``; raises naming the run if it cannot be recorded."""
        if self._error is not None:
            raise self._error
        return self.acked(in_entry(self.run_id, serializer, event, target))

    def acked(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Mark ``entry`` as one whose recording is waited for (:meth:`wait`)."""
        self.queued += 1
        entry["ack"] = 1
        return entry

    def committed(self, batch: Sequence[dict[str, Any]]) -> None:
        """A batch was recorded: count what was waited for in it, wake who waits."""
        self.recorded += sum(1 for entry in batch if entry.get("ack"))
        self._wake(None)

    def settle(self, count: int, error: BaseException | None) -> None:
        """``count`` events were delivered (to a parked run), or could not be (``error``)."""
        self.recorded += count
        self._wake(error)

    def stopped(self, why: str) -> None:
        """Nothing more will be recorded: waiters for unrecorded events get an error."""
        if self._error is None:
            self._error = WorkflowRuntimeError(
                f"durable run {self.run_id} stopped before the event sent to it was "
                f"recorded ({why}); send it again once the run has resumed"
            )
        self._wake(self._error)

    def _wake(self, error: BaseException | None) -> None:
        commit, self._commit = self._commit, None
        if commit is not None and not commit.done():
            if error is None:
                commit.set_result(None)
            else:
                commit.set_exception(error)
                commit.exception()  # retrieved: a waiter may have gone

    async def wait(self) -> None:
        """Return once every event queued so far is recorded."""
        target = self.queued
        while self.recorded < target:
            if self._error is not None:
                raise self._error
            if self._commit is None:
                self._commit = self._loop.create_future()
            await asyncio.shield(self._commit)


def in_entry(
    run_id: str, serializer: BaseSerializer, event: Event, target: str | None
) -> dict[str, Any]:
    """The ``in`` entry of ``event`` sent to run ``run_id``; raises if it cannot be written."""
    try:
        text = serializer.serialize(event)
    except Exception as exc:
        msg = (
            f"durable run {run_id} cannot record the event {type(event).__name__} it was "
            f"sent ({type(exc).__name__}: {error_text(exc)}); the events sent to a durable "
            "run must be serializable by its serializer (JSON by default)"
        )
        raise WorkflowRuntimeError(msg) from exc
    return {"k": "in", "ev": text, "to": target, "ns": time.time_ns()}


def unapplied(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The caller's events recorded after the last checkpoint (all of them if there is none)."""
    last = 0
    for i in range(len(entries) - 1, -1, -1):
        if entries[i]["k"] == "ck":
            last = i
            break
    return [e for e in entries[last:] if e["k"] == "in"]


def redeliver(run: Run, serializer: BaseSerializer, entries: Sequence[dict[str, Any]]) -> None:
    """Send the caller's ``entries`` to ``run`` again (before its journal is attached).

    An event that the restored run can no longer take (its workflow changed) is logged
    and skipped.
    """
    where = f"the journal of run {run.info.run_id}"
    for entry in entries:
        event = decode_event(serializer, entry["ev"], where)
        try:
            run.send(event, entry.get("to"))
        except WorkflowError as exc:
            _log.warning(
                "stepstream: durable run %s cannot take again the %s it was sent before "
                "the restart (%s); it is dropped",
                run.info.run_id,
                type(event).__name__,
                error_text(exc),
            )
