"""``configure_telemetry()``: the SDK set-up for applications and the CLI.

The runtime itself only uses the OpenTelemetry API. This module is the one place that
builds SDK providers and exporters, and it does so only when the application asks.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from stepstream._instrument import Redactor
from stepstream.telemetry import _settings
from stepstream.telemetry._files import (
    Rotation,
    TelemetryFileError,
    check_file_options,
    check_store_file,
    make_directory,
    open_log_file,
    rotated_path,
)
from stepstream.telemetry._logging import FanoutTarget, JsonLinesWriter
from stepstream.telemetry._otlp_json import (
    EncodingBatchSpanProcessor,
    OtlpJsonFileMetricExporter,
    OtlpJsonFileSpanExporter,
)
from stepstream.telemetry._ratelimit import OncePerWindow
from stepstream.telemetry._switch import LogTarget, install_target

__all__ = [
    "TelemetryFileError",
    "TelemetryHandle",
    "TelemetryWarning",
    "configure_telemetry",
    "store_paths",
]

DEFAULT_DIRECTORY = ".stepstream"
TRACES_FILE = "traces.jsonl"
LOGS_FILE = "logs.jsonl"
METRICS_FILE = "metrics.jsonl"
DEFAULT_SPAN_EVENT_LIMIT = 10_000
DEFAULT_SPAN_QUEUE = 65_536
ENCODED_BATCH = 2_048
#: Exporting over OTLP, spans and log records go out in batches of at most this many,
#: at most this long after they end (the SDK's 512 and 5 s for spans, 1 s for logs):
#: queued records are objects every garbage collection traverses, so under a burst the
#: collections held the event loop longer; and each batch's encoding waits for the GIL
#: behind the loop for less long. Bursts of 500 /run with OTLP export (as in
#: benchmarks/server.py), before and after, interleaved: the loop's worst lag went from
#: 20-39 ms to 13-20 ms. OTEL_BSP_*/OTEL_BLRP_* settings take precedence.
OTLP_BATCH = 64
OTLP_DELAY_MS = 200
DEFAULT_LOG_FLUSH_INTERVAL = 1.0
DEFAULT_ROTATED_FILES = 5


class TelemetryWarning(UserWarning):
    """configure_telemetry() kept something the application had already set up."""


@dataclass
class TelemetryHandle:
    """What configure_telemetry() set up; flush or shut it down through here."""

    directory: Path | None = None
    endpoint: str | None = None
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    logger_provider: Any = None
    log_writer: JsonLinesWriter | None = None
    log_filter: OncePerWindow | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything buffered; blocks the calling thread (see :meth:`aflush`)."""
        ok = True
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                ok = bool(provider.force_flush(timeout_millis)) and ok
        if self.log_writer is not None:
            ok = self.log_writer.flush() and ok
        return ok

    async def aflush(self, timeout: float = 30.0) -> bool:
        """Flush in a worker thread, so that a slow collector never freezes the loop."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.to_thread(self.force_flush, int(timeout * 1000))
        except TimeoutError:
            return False

    def shutdown(self, timeout: float = 5.0) -> None:
        """Flush and shut down what configure_telemetry() created; idempotent.

        The providers shut down in parallel and are waited for at most ``timeout``
        seconds: an unreachable collector delays the exit of a process by that much,
        not by the exporters' retry budget for each signal.
        """
        global _handle  # noqa: PLW0603 - the handle owns the configured state
        if self._closed:
            return
        self._closed = True
        install_target(None)
        threads = [
            threading.Thread(target=p.shutdown, name="stepstream-shutdown", daemon=True)
            for p in (self.tracer_provider, self.meter_provider, self.logger_provider)
            if p is not None
        ]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self.log_writer is not None:
            self.log_writer.close()
        if self.log_filter is not None:
            # Exporters still retrying in the background keep their logs rate-limited.
            still_running = any(t.is_alive() for t in threads)
            self.log_filter.uninstall(keep_attached=still_running)
        if _handle is self:
            _handle = None


_handle: TelemetryHandle | None = None


def configure_telemetry(
    *,
    service_name: str | None = None,
    directory: str | Path | None = None,
    endpoint: str | None = None,
    logs: Literal["auto", "file", "stdout", "none"] = "auto",
    payload_limit: int | None = None,
    log_payload_limit: int | None = None,
    redact: Redactor | None = None,
    log_flush_interval: float = DEFAULT_LOG_FLUSH_INTERVAL,
    max_file_bytes: int | None = None,
    rotated_files: int = DEFAULT_ROTATED_FILES,
) -> TelemetryHandle:
    """Set up tracing, metrics and JSON log lines for stepstream runs; idempotent.

    With an OTLP endpoint (``endpoint=`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``) spans,
    metrics and log records go there over OTLP. Without one, the embedded default
    writes ``traces.jsonl`` (OTLP/JSON lines), ``metrics.jsonl`` and ``logs.jsonl``
    (one JSON object per line) to ``directory`` (default ``.stepstream``). Honours
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_PROTOCOL and
    _HEADERS, OTEL_{TRACES,METRICS,LOGS}_EXPORTER (otlp | console | none) and
    OTEL_SDK_DISABLED. A provider the application already set is kept, with a warning.

    ``payload_limit`` cuts event payloads in span events (default 4096 characters),
    ``log_payload_limit`` in log lines (default: complete). ``redact(event, payload)``
    is applied to every run's payloads (after a ``Workflow(redact=...)`` hook) before
    any span event, log line or OTLP record is built: return the payload to record,
    or None to record the event's type and seq only.

    Log lines reach their file (or stdout) at most ``log_flush_interval`` seconds after
    they are written. With ``max_file_bytes``, each file of the embedded default is
    rotated when it would grow past that size (``traces.jsonl`` becomes
    ``traces.1.jsonl``, ...), and ``rotated_files`` rotated files of each are kept.
    The directory is created 0700 and the files 0600; a store file that is a symbolic
    link or not a regular file raises :class:`TelemetryFileError`.
    """
    global _handle  # noqa: PLW0603 - one configuration per process
    _settings.check(payload_limit=payload_limit, log_payload_limit=log_payload_limit, redact=redact)
    check_file_options(log_flush_interval, max_file_bytes, rotated_files)
    if _handle is not None:
        return _handle
    _settings.apply(span_limit=payload_limit, log_limit=log_payload_limit, hook=redact)
    if _env_true("OTEL_SDK_DISABLED"):
        _handle = TelemetryHandle()
        return _handle
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    folder = None if endpoint else Path(directory or DEFAULT_DIRECTORY)
    rotation = Rotation(max_file_bytes, rotated_files)
    if folder is not None:
        make_directory(folder)
        # Refuse an unusable file before anything is set up, not half-way through.
        for name in (TRACES_FILE, METRICS_FILE, LOGS_FILE):
            check_store_file(folder / name)
    resource = _resource(service_name)
    handle = TelemetryHandle(directory=folder, endpoint=endpoint)
    handle.tracer_provider = _tracing(resource, endpoint, folder, rotation)
    handle.meter_provider = _metrics(resource, endpoint, folder, rotation)
    targets: list[LogTarget] = []
    mode = logs if logs != "auto" else ("none" if endpoint else "file")
    if mode != "none":
        if mode == "stdout" or folder is None:
            stream, close, name = sys.stdout.buffer, None, "stdout"
        else:
            stream = open_log_file(folder / LOGS_FILE, rotation)
            close, name = stream.close, str(folder / LOGS_FILE)
        handle.log_writer = JsonLinesWriter(
            stream, close=close, flush_interval=log_flush_interval, name=name
        )
        targets.append(handle.log_writer)
    if endpoint and _exporter_choice("OTEL_LOGS_EXPORTER") != "none":
        from stepstream.telemetry._otlp_logs import (  # noqa: PLC0415 - experimental SDK
            OtlpLogTarget,
            make_logger_provider,
        )

        queue = _env_int("OTEL_BLRP_MAX_QUEUE_SIZE") or DEFAULT_SPAN_QUEUE
        handle.logger_provider = make_logger_provider(
            resource,
            _otlp_log_exporter(),
            queue=queue,
            batch=min(_env_int("OTEL_BLRP_MAX_EXPORT_BATCH_SIZE") or OTLP_BATCH, queue),
            delay_ms=_env_int("OTEL_BLRP_SCHEDULE_DELAY") or OTLP_DELAY_MS,
        )
        targets.append(OtlpLogTarget(handle.logger_provider))
    if targets:
        install_target(targets[0] if len(targets) == 1 else FanoutTarget(targets))
    handle.log_filter = OncePerWindow()
    handle.log_filter.install()
    atexit.register(handle.shutdown)
    _handle = handle
    return handle


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        return None  # the SDK warns about it and uses its default


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _exporter_choice(variable: str) -> str:
    return os.environ.get(variable, "otlp").split(",")[0].strip().lower() or "otlp"


def store_paths(directory: Path, name: str) -> list[Path]:
    """The files holding one kind of embedded telemetry, oldest first.

    ``store_paths(d, "traces.jsonl")`` is ``[d/traces.<n>.jsonl, ..., d/traces.1.jsonl,
    d/traces.jsonl]`` for the rotated files that exist, whether the last one exists or not.
    """
    current = directory / name
    prefix, suffix = current.stem + ".", current.suffix
    indexes = []
    try:
        entries = [entry.name for entry in directory.iterdir()]
    except OSError:
        entries = []
    for entry in entries:
        middle = entry[len(prefix) : len(entry) - len(suffix)]
        if (
            entry.startswith(prefix)
            and entry.endswith(suffix)
            and middle.isdecimal()
            and rotated_path(current, int(middle)).name == entry  # no leading zeros
        ):
            indexes.append(int(middle))
    return [rotated_path(current, i) for i in sorted(indexes, reverse=True)] + [current]


def _resource(service_name: str | None) -> Resource:
    given = {"service.name": service_name or "stepstream"}
    if os.environ.get("OTEL_SERVICE_NAME"):
        given = {}
    return Resource.create(given)


def _protocol() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf").strip().lower()


def _tracing(
    resource: Resource, endpoint: str | None, folder: Path | None, rotation: Rotation
) -> TracerProvider | None:
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider):
        warnings.warn(
            f"configure_telemetry(): a TracerProvider ({type(current).__name__}) is already "
            "set; stepstream uses it and adds no exporter",
            TelemetryWarning,
            stacklevel=3,
        )
        return None
    choice = _exporter_choice("OTEL_TRACES_EXPORTER")
    exporter: SpanExporter | None = None
    if choice == "console":
        exporter = ConsoleSpanExporter()
    elif choice != "none":
        exporter = _span_exporter(endpoint, folder, rotation)
    limits = None
    if "OTEL_SPAN_EVENT_COUNT_LIMIT" not in os.environ:
        limits = SpanLimits(max_events=DEFAULT_SPAN_EVENT_LIMIT)
    # The handle shuts everything down once, at exit too (see configure_telemetry).
    provider = TracerProvider(resource=resource, span_limits=limits, shutdown_on_exit=False)
    if exporter is not None:
        # A burst of concurrent runs ends thousands of spans at once: a deeper queue than
        # the SDK's 2,048 keeps them, unless OTEL_BSP_MAX_QUEUE_SIZE says otherwise.
        queue = _env_int("OTEL_BSP_MAX_QUEUE_SIZE") or DEFAULT_SPAN_QUEUE
        # Our file exporter takes spans encoded as they end, and bigger batches: each
        # export waits for the GIL behind a busy event loop a few times, whatever its
        # size, so under sustained load small batches fall behind (the queue grows).
        encoded = isinstance(exporter, OtlpJsonFileSpanExporter)
        default_batch = ENCODED_BATCH if encoded else OTLP_BATCH
        # The SDK insists on a batch no larger than the queue.
        batch = min(_env_int("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") or default_batch, queue)
        if encoded:
            processor: BatchSpanProcessor = EncodingBatchSpanProcessor(
                exporter, max_queue_size=queue, max_export_batch_size=batch
            )
        else:
            delay = _env_int("OTEL_BSP_SCHEDULE_DELAY") or OTLP_DELAY_MS
            processor = BatchSpanProcessor(
                exporter,
                max_queue_size=queue,
                max_export_batch_size=batch,
                schedule_delay_millis=delay,
            )
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def _span_exporter(endpoint: str | None, folder: Path | None, rotation: Rotation) -> SpanExporter:
    if folder is not None:
        return OtlpJsonFileSpanExporter(folder / TRACES_FILE, rotation.max_bytes, rotation.keep)
    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter as GrpcSpanExporter,
        )

        return GrpcSpanExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter(endpoint=_signal_url(endpoint, "traces"))


def _metrics(
    resource: Resource, endpoint: str | None, folder: Path | None, rotation: Rotation
) -> MeterProvider | None:
    from opentelemetry.metrics._internal import _ProxyMeterProvider  # noqa: PLC0415

    current = metrics.get_meter_provider()
    if not isinstance(current, _ProxyMeterProvider):
        warnings.warn(
            f"configure_telemetry(): a MeterProvider ({type(current).__name__}) is already "
            "set; stepstream uses it and adds no exporter",
            TelemetryWarning,
            stacklevel=3,
        )
        return None
    choice = _exporter_choice("OTEL_METRICS_EXPORTER")
    readers = []
    if choice != "none":
        exporter: MetricExporter
        if choice == "console":
            exporter = ConsoleMetricExporter()
        elif folder is not None:
            exporter = OtlpJsonFileMetricExporter(
                folder / METRICS_FILE, rotation.max_bytes, rotation.keep
            )
        elif _protocol() == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter as GrpcMetricExporter,
            )

            exporter = GrpcMetricExporter(endpoint=endpoint)
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter(endpoint=_signal_url(endpoint, "metrics"))
        readers.append(PeriodicExportingMetricReader(exporter))
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    metrics.set_meter_provider(provider)
    return provider


def _otlp_log_exporter() -> Any:
    if _protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (  # noqa: PLC0415
            OTLPLogExporter as GrpcLogExporter,
        )

        return GrpcLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (  # noqa: PLC0415
        OTLPLogExporter,
    )

    return OTLPLogExporter()


def _signal_url(endpoint: str | None, signal: str) -> str | None:
    specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
    if specific:
        return specific
    if endpoint is None:
        return None
    return endpoint.rstrip("/") + f"/v1/{signal}"
