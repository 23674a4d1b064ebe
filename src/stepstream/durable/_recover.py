"""Continuing a durable run after a crash or restart, from its journal.

Runs as the body of the run's DBOS workflow, which DBOS re-invokes on ``launch()``. The
journal's batches are read (their writes spent no DBOS step ids: nothing to replay),
the last checkpoint restores the run through the saved-context machinery (the step
invocations in flight then re-run, as the same invocations), the stream goes on after
the last recorded event, and the run continues live in a task of its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from stepstream.context import Context
from stepstream.durable import _dbos_io
from stepstream.durable._inputs import redeliver, unapplied
from stepstream.durable._journal import RunJournal
from stepstream.durable._park import last_inbox, last_park, taken_up
from stepstream.durable._retries import RestoredRetries
from stepstream.durable._stream import decode_event
from stepstream.telemetry._records import remote_span

if TYPE_CHECKING:
    from stepstream.durable._runtime import DBOSRuntime
    from stepstream.events import Event
    from stepstream.workflow import Workflow

__all__ = ["recover"]

#: The least time a resumed run is given when its timeout had already run out.
_LAST_CHANCE = 0.001


def _restored(
    workflow: Workflow, run_id: str, start: dict[str, Any], entries: list[dict[str, Any]]
) -> tuple[Context, Event | None]:
    """The run's context from its last checkpoint, or its start (and start event)."""
    checkpoint = next((e for e in reversed(entries) if e["k"] == "ck"), None)
    serializer = workflow.serializer
    if checkpoint is not None:
        return Context.from_dict(workflow, checkpoint["ctx"], serializer), None
    if "ctx" in start:
        return Context.from_dict(workflow, start["ctx"], serializer), None
    ctx = Context(workflow)
    where = f"the journal of run {run_id}"
    return ctx, decode_event(ctx._default_serializer(), start["ev"], where)  # noqa: SLF001


def _first_start(
    context: contextvars.Context,
    start: dict[str, Any],
    entries: list[dict[str, Any]],
    attempt: int,
    trace: list[str] | None,
) -> bool:
    """Whether this is the first start of a run started through its workflow's queue.

    Dequeued here, not resumed: its run span is then made a child of the span that
    enqueued it (the request's, ``trace``), in that trace.
    """
    if not start.get("queued") or entries or attempt > 1:
        return False
    parent = remote_span(*trace) if trace and trace[0] and trace[1] else None
    if parent is not None:
        span = otel_trace.NonRecordingSpan(parent)
        context.run(otel_context.attach, otel_trace.set_span_in_context(span))
    return True


async def recover(  # noqa: PLR0917 - the DBOS workflow's arguments, passed on
    runtime: DBOSRuntime,
    workflow: Workflow,
    run_id: str,
    start: dict[str, Any],
    trace: list[str] | None,
    started_ns: int,
) -> dict[str, Any]:
    """Take up run ``run_id`` of ``workflow``; return its end entry once it has one."""
    batches = await _dbos_io.read_batches(run_id)
    entries = [entry for batch in batches for entry in batch]
    for entry in entries:
        if entry["k"] == "end":  # it ended; only DBOS's record of it was missing
            runtime._ended_before(run_id)  # noqa: SLF001 - a friend
            return entry
    ctx, start_event = _restored(workflow, run_id, start, entries)
    saved = ctx._begin()  # noqa: SLF001 - the engine is the context's friend
    loop = asyncio.get_running_loop()
    # The run is made, and its task runs, in the context where the runtime launched (its
    # observers), not in this DBOS workflow's.
    context = runtime.launch_context.copy()
    status = await _dbos_io.run_status(run_id)
    attempt = status[1] if status is not None else 1
    fresh = _first_start(context, start, entries, attempt, trace)
    if fresh:
        started_ns = time.time_ns()  # its timeout counts from its start, not its enqueue
    run = context.run(workflow._new_run, loop, ctx, run_id, saved)  # noqa: SLF001 - a friend
    seqs = [e["seq"] for e in entries if e["k"] == "ev"]
    if seqs:
        run.stream.seq = max(run.stream.seq, max(seqs) + 1)
    info = run.info
    info.attempt = attempt
    park = last_park(entries)
    if park is not None:  # reloaded after its release: DBOS counted dispatches anew
        info.attempt += park["attempt"]
        info.unparked = True
    info.resumed = (trace[0], trace[1]) if trace and trace[0] and trace[1] and not fresh else None
    info.last_checkpoint_ns = entries[-1]["ns"] if entries else None
    if workflow.timeout is not None:  # the run's timeout counts from its first start
        elapsed = (time.time_ns() - started_ns) / 1e9
        run.spent = min(elapsed, workflow.timeout - _LAST_CHANCE)
    # The caller's events recorded after the checkpoint are sent again (not re-recorded),
    # then those its inbox got meanwhile (recorded, with their inbox offsets).
    ser = ctx._default_serializer()  # noqa: SLF001
    redeliver(run, ser, unapplied(entries))
    inbox = await taken_up(run, ser, entries)
    journal = RunJournal(run, ser, None, len(batches))
    journal.first_start = fresh
    journal.restored_retries = RestoredRetries(entries, ser)
    runtime.attach(journal, run, workflow.workflow_name, last_inbox(entries + inbox), inbox)
    if start_event is None:
        assert saved is not None  # noqa: S101 - a checkpoint or saved context was read
        begin: Any = saved.routing
    else:
        run.replaying = not fresh  # no checkpoint: the start step ran, or began, before
        begin = start_event
    handler = workflow._launch(run, begin, context)  # noqa: SLF001
    runtime.started(handler)
    # An event posted to the inbox while the run was being taken up is handed over now.
    runtime._parking.spawn(runtime._parking.drain(run_id))  # noqa: SLF001
    return await journal.write_loop()
