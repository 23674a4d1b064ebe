"""Starting runs, and the one consumer of each run's stream that fills its event log.

Each run the server starts gets one task (its *pump*) that iterates
``handler.stream_events()`` (the run's single consumer), encodes every event once into
the run's :class:`RunLog` with its stream position, and records the outcome on the
handler. The pumps belong to :class:`Runs`, which cancels the runs and waits for their
pumps on :meth:`Runs.aclose`: no task outlives the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from opentelemetry import trace

from stepstream.errors import WorkflowCancelledError, WorkflowTimeoutError
from stepstream.events import EventsDroppedEvent, StartEvent, StopEvent
from stepstream.handler import WorkflowHandler
from stepstream.server._envelope import BadRequest, encode_event
from stepstream.server._handlers import HandlerRecord, HandlerStatus, HandlerStore
from stepstream.server._log import RunLog
from stepstream.server._steplog import StepFrames
from stepstream.telemetry import error_text, safe_text
from stepstream.workflow import Workflow

__all__ = ["Runs", "correlation", "logger", "run_outcome", "traced_name"]

logger = logging.getLogger("stepstream.server")

_SHUTDOWN_GRACE = 5.0  # seconds a cancelled run gets to wind down when the server stops


def correlation(record: HandlerRecord | None = None) -> dict[str, Any]:
    """The correlation keys of a server log line: the current span's, and the run's."""
    keys: dict[str, Any] = {}
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        keys["trace_id"] = format(ctx.trace_id, "032x")
        keys["span_id"] = format(ctx.span_id, "016x")
    if record is not None:
        keys["handler_id"] = record.handler_id
        keys["run_id"] = record.run_id
        keys["workflow"] = record.traced_name  # as on the run's own spans and lines
        keys["workflow_name"] = record.workflow_name  # the name it is served under
    return keys


def run_outcome(handler: WorkflowHandler) -> tuple[HandlerStatus, StopEvent | None, str | None]:
    """Status, result event and error text of a run that has ended.

    The text is made safe (lone surrogates escaped, a raising ``__str__`` replaced): it
    goes into JSON answers and log lines, whose encoders refuse surrogates.
    """
    error = handler.exception()
    if error is None:
        return "completed", handler.get_stop_event(), None
    if isinstance(error, WorkflowCancelledError):
        return "cancelled", None, error_text(error) or "the run was cancelled"
    if isinstance(error, WorkflowTimeoutError):
        return "failed", None, error_text(error)
    return "failed", None, f"{safe_text(type(error).__name__)}: {error_text(error)}"


def traced_name(workflow: Workflow) -> str:
    """The name a run of ``workflow`` carries in telemetry: ``workflow_name=``, else the class."""
    cls = type(workflow)
    name = workflow.workflow_name
    return cls.__name__ if name == f"{cls.__module__}.{cls.__qualname__}" else safe_text(name)


class Runs:
    """The runs of one server: start them, follow them into their logs, stop them."""

    def __init__(self, store: HandlerStore, event_log_limit: int | None) -> None:
        self.store = store
        self.event_log_limit = event_log_limit
        self._pumps: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self._frames = StepFrames()

    def start(
        self,
        name: str,
        workflow: Workflow,
        start_event: StartEvent,
        handler_id: str | None,
    ) -> HandlerRecord:
        """Start ``workflow`` under handler ``handler_id`` (a new id when None)."""
        if self._closing:
            msg = "the server is shutting down; start the run elsewhere or later"
            raise BadRequest(msg, status=503)
        if handler_id is None:
            handler_id = secrets.token_urlsafe(12)
        elif self.store.get(handler_id) is not None:
            msg = (
                f"handler_id {handler_id!r} is taken; leave handler_id out to get a new one "
                "(continuing a finished handler is not supported)"
            )
            raise BadRequest(msg, status=409)
        # The current span is the request's server span: the run span becomes its child,
        # so the run shares the trace of the request that started it.
        ctx = trace.get_current_span().get_span_context()
        steps = RunLog(self.event_log_limit)
        with self._frames.starting(steps):  # per step attempt, nothing per streamed event
            handler = workflow.run(start_event=start_event, **self._run_options(handler_id))
        record = HandlerRecord(
            handler_id=handler_id,
            workflow_name=name,
            run_id=handler.run_id,
            log=RunLog(self.event_log_limit),
            steps=steps,
            handler=handler,
            traced_name=traced_name(workflow),
            trace_id=format(ctx.trace_id, "032x") if ctx.is_valid else None,
        )
        self.store.add(record)
        self._follow(record, handler, 0)
        logger.info("run_started", extra=correlation(record))
        return record

    async def open(self) -> None:
        """Called as the server starts serving (a durable server launches its runtime)."""

    def _run_options(self, handler_id: str) -> dict[str, Any]:
        """More keywords for ``workflow.run()`` (a durable server names the run)."""
        return {}

    def _follow(self, record: HandlerRecord, handler: WorkflowHandler, first_seq: int) -> None:
        """Start the pump that fills ``record``'s log from ``handler``'s stream."""
        handler_id = record.handler_id
        task = asyncio.get_running_loop().create_task(
            self._pump(record, handler, first_seq), name=f"stepstream.server pump {handler_id}"
        )
        self._pumps[handler_id] = task
        task.add_done_callback(lambda done: self._unfollow(handler_id, done))

    def _unfollow(self, handler_id: str, task: asyncio.Task[None]) -> None:
        if self._pumps.get(handler_id) is task:
            del self._pumps[handler_id]

    async def _pump(self, record: HandlerRecord, handler: WorkflowHandler, first_seq: int) -> None:
        log = record.log
        seq = first_seq
        try:
            async for event in handler.stream_events():
                if type(event) is EventsDroppedEvent:
                    # Stands for the events the run's own stream_limit dropped: it takes
                    # the seq of the last one, so a resume after it continues after them.
                    seq += event.dropped
                    log.append(encode_event(seq - 1, event))
                    continue
                log.append(encode_event(seq, event))
                seq += 1
        except Exception:  # the stream itself broke: keep the outcome, say so
            logger.exception("event_stream_failed", extra=correlation(record))
        finally:
            if not handler.done():
                await handler.cancel_run()
            status, result, error = (
                run_outcome(handler) if handler.done() else ("failed", None, None)
            )
            record.finish(status, result, error)
            log.close()
            record.steps.close()
            self.store.finished(record)
            logger.info(
                "run_finished", extra={**correlation(record), "status": status, "error": error}
            )

    async def wait(self, record: HandlerRecord) -> HandlerRecord:
        """Return the handler's final record once its run has ended."""
        task = self._pumps.get(record.handler_id)
        if task is not None:
            await asyncio.shield(task)
        return record

    async def cancel(self, record: HandlerRecord) -> None:
        """Cancel the handler's run and wait until its record is final."""
        handler = record.handler
        if handler is not None:
            await handler.cancel_run()
        await self.wait(record)

    async def aclose(self) -> None:
        """Cancel every running run and wait (bounded) for their pumps to finish."""
        self._closing = True
        running = [r for r in self.store.query(statuses=["running"]) if r.handler is not None]
        if running:
            async with asyncio.timeout(_SHUTDOWN_GRACE + 1):
                await asyncio.gather(
                    *(r.handler.cancel_run(timeout=_SHUTDOWN_GRACE) for r in running if r.handler)
                )
        pumps = list(self._pumps.values())
        if pumps:
            _, pending = await asyncio.wait(pumps, timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
