"""Every span, attribute, log key and metric name stepstream emits: a public contract.

Dashboards, queries and alerts depend on these names; they change only with a major
version. The README's telemetry section documents the same table.
"""

from __future__ import annotations

from typing import Final

# Re-exported explicitly (mypy's no-implicit-reexport): the statuses are part of the contract.
from stepstream._instrument import STATUSES as STATUSES  # noqa: PLC0414
from stepstream._instrument import Status as Status  # noqa: PLC0414

# -- spans -----------------------------------------------------------------------------
#: Run span name prefix: ``invoke_workflow {WorkflowClass}``.
RUN_SPAN_PREFIX: Final = "invoke_workflow"
#: Step span name prefix: ``run_step {step_name}``, one per attempt.
STEP_SPAN_PREFIX: Final = "run_step"
#: Span event name for every streamed event (and the terminal event, on the run span).
STREAM_EVENT: Final = "stepstream.event"
#: Span event names on a step span around ``wait_for_event``.
WAIT_EVENT: Final = "stepstream.wait"
RESUME_EVENT: Final = "stepstream.resume"
#: Span event name on a step span once the step's resources are resolved (steps with
#: ``Annotated[T, Resource(...)]`` parameters only), before its code runs.
RESOURCES_EVENT: Final = "stepstream.resources"

GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_OPERATION_INVOKE_WORKFLOW: Final = "invoke_workflow"
GEN_AI_WORKFLOW_NAME: Final = "gen_ai.workflow.name"
ERROR_TYPE: Final = "error.type"

WORKFLOW: Final = "stepstream.workflow"
RUN_ID: Final = "stepstream.run_id"
RUN_STATUS: Final = "stepstream.run.status"
#: On a run continued from a saved context: True, and how many runs the work took.
RUN_RESUMED: Final = "stepstream.run.resumed"
RUN_ATTEMPT: Final = "stepstream.run.attempt"
#: On a durable run resumed after a crash: when its previous attempt last recorded
#: anything (ns since the epoch): the gap up to the span's start is the outage.
RUN_LAST_CHECKPOINT_NS: Final = "stepstream.run.last_checkpoint_ns"
#: True on the run span of a durable run's attempt that ended because the run was
#: released (parked) while all its steps waited for events; its next attempt, reloaded
#: when an event came, is a resumed run span of the same trace.
RUN_PARKED: Final = "stepstream.run.parked"
STEP: Final = "stepstream.step"
STEP_ATTEMPT: Final = "stepstream.step.attempt"
STEP_WORKER: Final = "stepstream.step.worker"
STEP_STATUS: Final = "stepstream.step.status"
#: True on a step attempt re-running an invocation that was in flight when its run was
#: saved or crashed (at-least-once: its code ran, at least in part, before).
STEP_REPLAYED: Final = "stepstream.step.replayed"
EVENT_IN: Final = "stepstream.event.in"
EVENT_OUT: Final = "stepstream.event.out"
EVENTS_STREAMED: Final = "stepstream.events.streamed"
EVENT_TYPE: Final = "stepstream.event.type"
EVENT_SEQ: Final = "stepstream.event.seq"
EVENT_PAYLOAD: Final = "stepstream.event.payload"
WAIT_EVENT_TYPE: Final = "stepstream.wait.event_type"
#: On ``stepstream.resources``: the resource names (factory ``__qualname__``, config
#: file[.path_selector]) in parameter order, and how long resolving them all took.
RESOURCE_NAMES: Final = "stepstream.resource.names"
RESOURCE_SECONDS: Final = "stepstream.resource.seconds"

#: Values of ``stepstream.run.status`` and ``stepstream.step.status`` (and of the
#: metrics' status attribute and the log lines' ``status`` key): :data:`STATUSES`.
STATUS_OK: Final[Status] = "ok"
STATUS_ERROR: Final[Status] = "error"
STATUS_TIMEOUT: Final[Status] = "timeout"
STATUS_CANCELLED: Final[Status] = "cancelled"

#: Marker appended to a truncated payload: ``...[truncated N chars]``.
TRUNCATED_MARKER: Final = "...[truncated {n} chars]"
#: Default maximum payload length (characters) in span attributes (log lines: complete).
DEFAULT_PAYLOAD_LIMIT: Final = 4096
#: Payload (a JSON string) of an event that cannot be encoded: its type and seq are kept.
UNSERIALISABLE_MARKER: Final = "<unserialisable: {reason}>"
#: Payload (a JSON string) of an event whose ``redact`` hook raised (``{reason}``: its type).
REDACT_FAILED_MARKER: Final = "<redact failed: {reason}>"

# -- log lines (structlog, flat top-level keys) ----------------------------------------
LOGGER_NAME: Final = "stepstream"
LOG_STREAM_EVENT: Final = "stream_event"
LOG_RUN_STARTED: Final = "run_started"
LOG_RUN_FINISHED: Final = "run_finished"
LOG_STEP_STARTED: Final = "step_started"
LOG_STEP_FINISHED: Final = "step_finished"
LOG_STEP_FAILED: Final = "step_failed"
LOG_STEP_RETRY: Final = "step_retry"
#: A durable run was released while it waited (instead of ``run_finished``).
LOG_RUN_PARKED: Final = "run_parked"

KEY_TIMESTAMP: Final = "timestamp"
KEY_LEVEL: Final = "level"
KEY_LOGGER: Final = "logger"
KEY_EVENT: Final = "event"
KEY_WORKFLOW: Final = "workflow"
KEY_RUN_ID: Final = "run_id"
KEY_STEP: Final = "step"
KEY_ATTEMPT: Final = "attempt"
KEY_EVENT_TYPE: Final = "event_type"
KEY_SEQ: Final = "seq"
KEY_PAYLOAD: Final = "payload"
KEY_TRACE_ID: Final = "trace_id"
KEY_SPAN_ID: Final = "span_id"
KEY_STATUS: Final = "status"
KEY_DURATION_MS: Final = "duration_ms"
KEY_ERROR_TYPE: Final = "error_type"
KEY_ERROR: Final = "error"
KEY_DELAY_S: Final = "delay_s"
#: On the lines of a run continued from a saved context.
KEY_RESUMED: Final = "resumed"
KEY_RUN_ATTEMPT: Final = "run_attempt"
#: On a durable run's run_started line after a crash (ns), and on replayed steps' lines.
KEY_LAST_CHECKPOINT_NS: Final = "last_checkpoint_ns"
KEY_REPLAYED: Final = "replayed"

# -- metrics ---------------------------------------------------------------------------
METRIC_RUN_DURATION: Final = "stepstream.run.duration"
METRIC_STEP_DURATION: Final = "stepstream.step.duration"
METRIC_EVENTS_STREAMED: Final = "stepstream.events.streamed"
METRIC_RUNS_ACTIVE: Final = "stepstream.runs.active"
METRIC_STEP_RETRIES: Final = "stepstream.step.retries"
#: Durable runs (and runs continued from a saved context) that resumed; step invocations
#: that re-ran after a crash or a restore; how long one journal commit took.
METRIC_RUNS_RESUMED: Final = "stepstream.runs.resumed"
METRIC_STEPS_REPLAYED: Final = "stepstream.steps.replayed"
METRIC_CHECKPOINT_DURATION: Final = "stepstream.checkpoint.duration"
#: Durable runs released while they waited for events (up-down: +1 when a process
#: releases one, -1 when a process reloads one; sum it over the processes).
METRIC_RUNS_PARKED: Final = "stepstream.runs.parked"
#: Durable runs of a dead replica (its lease expired) that another replica took over.
METRIC_RUNS_FAILED_OVER: Final = "stepstream.runs.failed_over"
#: Durable runs enqueued on a workflow's cluster-wide queue and not started yet (gauge).
METRIC_QUEUE_DEPTH: Final = "stepstream.queue.depth"
#: Times the durable database could not be written (journals waited until it was back).
METRIC_DATABASE_OUTAGES: Final = "stepstream.database.outages"
#: How long each of those lasted, from the first failed write to the next one done (s).
METRIC_DATABASE_OUTAGE_DURATION: Final = "stepstream.database.outage.duration"
#: The resource attribute that tells the replicas of a cluster apart.
RESOURCE_INSTANCE_ID: Final = "service.instance.id"

#: Every name above: the status type and the upper-case constants.
# Computed, so that a constant added above cannot be left out of it.
__all__ = ["Status", *(name for name in tuple(globals()) if name.isupper())]  # noqa: PLE0604
