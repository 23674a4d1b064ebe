"""Where stepstream's log lines go: nowhere, the application's structlog, or JSON lines.

The target is chosen once per run (``_switch.current_target``), never per line:

- ``configure_telemetry()`` installed a target (fast orjson lines to a file or stdout,
  and OTLP log records when an endpoint is set): that one;
- otherwise, when the application configured structlog: its loggers, so its processors,
  renderers and ``structlog.testing.capture_logs()`` see our lines;
- otherwise: none. An unconfigured library prints nothing and writes no file.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import IO, Any

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

from stepstream._instrument import current_step
from stepstream.telemetry import attributes as attrs
from stepstream.telemetry._files import Flusher
from stepstream.telemetry._payload import safe_json
from stepstream.telemetry._switch import LogTarget

__all__ = [
    "CORRELATION_KEYS",
    "STRUCTLOG_TARGET",
    "FanoutTarget",
    "JsonLinesWriter",
    "add_correlation",
]


class _StructlogTarget:
    """Sends lines through the application's structlog configuration."""

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        logger = structlog.get_logger(attrs.LOGGER_NAME)
        getattr(logger, level)(message, logger=attrs.LOGGER_NAME, **fields)


STRUCTLOG_TARGET = _StructlogTarget()

_log = logging.getLogger("stepstream")


class _UtcClock:
    """ISO 8601 UTC timestamps, formatting the date part once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        ns = time.time_ns()
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}Z"


def _default(value: object) -> str:
    return repr(value)


class JsonLinesWriter:
    """Writes each line as one orjson-encoded JSON object to a binary stream.

    Keys: ``timestamp``, ``level``, ``logger``, ``event`` (the message), then the fields.
    Writes are buffered by the stream (a line is one buffered append); :meth:`flush`
    pushes them out. With ``flush_interval``, a :class:`Flusher` thread of the writer's
    own flushes every that many seconds, so that a line reaches the file (and survives
    the process being killed) at most that long after it was written.
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        close: Callable[[], None] | None = None,
        flush_interval: float | None = None,
        name: str = "the log stream",
    ) -> None:
        self._stream = stream
        self._close = close
        self._clock = _UtcClock()
        self._lock = threading.Lock()
        self._closed = False
        self._name = name
        self._failing = False
        self._interval = flush_interval
        self._flusher: Flusher | None = None
        if flush_interval is not None:
            self._start_flusher()
        # The buffer is flushed before a fork, or parent and child would both write the
        # lines it held. A forked child has no threads but the forking one: it gets a
        # lock and a flusher of its own.
        before = weakref.WeakMethod(self._before_fork)
        after = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(
            before=lambda: (m := before()) is not None and m(),
            after_in_child=lambda: (m := after()) is not None and m(),
        )

    def _start_flusher(self) -> None:
        assert self._interval is not None  # noqa: S101 - only called with an interval
        self._flusher = Flusher(self._timed_flush, self._interval, name="stepstream-log-flush")
        self._flusher.start()

    def _before_fork(self) -> None:
        self.flush()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # it may have been held by a thread the child lacks
        if not self._closed and self._interval is not None:
            self._start_flusher()

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        """Encode and write one line (always valid JSON, whatever the fields hold)."""
        record = {
            attrs.KEY_TIMESTAMP: self._clock.now(),
            attrs.KEY_LEVEL: level,
            attrs.KEY_LOGGER: attrs.LOGGER_NAME,
            attrs.KEY_EVENT: message,
            **fields,
        }
        try:
            line = orjson.dumps(record, default=_default, option=orjson.OPT_APPEND_NEWLINE)
        except Exception:  # noqa: BLE001 - the slow path: a value orjson refuses, made safe
            line = safe_json(record).encode() + b"\n"
        with self._lock:
            self._stream.write(line)

    def flush(self) -> bool:
        """Flush buffered lines to the stream's file; False if that failed (it is logged)."""
        with self._lock:
            return self._closed or self._flush_or_report()

    def _timed_flush(self) -> None:
        """The flusher's call: flush what was written since the last one."""
        with self._lock:
            if not self._closed:
                self._flush_or_report()

    def _flush_or_report(self) -> bool:
        """Flush; report a failure once (until a flush succeeds), never raise it."""
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._report(exc)
            return False
        self._failing = False
        return True

    def _report(self, error: Exception) -> None:
        if not self._failing:
            _log.error("stepstream: cannot write %s: %s", self._name, error)
        self._failing = True

    def close(self) -> None:
        """Stop the flusher, flush, and close the file if this writer opened it; idempotent.

        A failure to write is logged, not raised: shutting telemetry down never fails.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._flusher is not None:
                self._flusher.stop()
            self._flush_or_report()
            if self._close is not None:
                try:
                    self._close()
                except (OSError, ValueError) as exc:  # the buffer's last flush failed again
                    self._report(exc)


class FanoutTarget:
    """Sends each line to several targets (JSON lines and OTLP log records)."""

    def __init__(self, targets: list[LogTarget]) -> None:
        self._targets = tuple(targets)

    def emit(self, level: str, message: str, fields: dict[str, Any], span: Any) -> None:
        """Write the line to every target."""
        for target in self._targets:
            target.emit(level, message, fields, span)


CORRELATION_KEYS = (
    attrs.KEY_RUN_ID,
    attrs.KEY_WORKFLOW,
    attrs.KEY_STEP,
    attrs.KEY_TRACE_ID,
    attrs.KEY_SPAN_ID,
)


def add_correlation(
    logger: WrappedLogger,  # noqa: ARG001 - the structlog processor signature
    method_name: str,  # noqa: ARG001
    event_dict: EventDict,
) -> EventDict:
    """Structlog processor: add run_id, workflow, step, trace_id and span_id inside a step.

    Put it in a structlog chain, or in ``ProcessorFormatter(foreign_pre_chain=[...])`` to
    give stdlib ``logging`` lines emitted inside steps the same correlation keys.
    Keys already present are left alone.
    """
    inv = current_step.get()
    if inv is None:
        return event_dict
    event_dict.setdefault(attrs.KEY_RUN_ID, inv.run.run_id)
    event_dict.setdefault(attrs.KEY_WORKFLOW, inv.run.workflow)
    event_dict.setdefault(attrs.KEY_STEP, inv.step)
    # The innermost span: the step span, or a span the step's code opened inside it.
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault(attrs.KEY_TRACE_ID, format(ctx.trace_id, "032x"))
        event_dict.setdefault(attrs.KEY_SPAN_ID, format(ctx.span_id, "016x"))
    return event_dict
