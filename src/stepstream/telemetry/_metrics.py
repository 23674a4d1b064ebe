"""The stepstream instruments, created once per meter (OpenTelemetry API only)."""

from __future__ import annotations

from opentelemetry.metrics import Meter

from stepstream.telemetry import attributes as attrs

__all__ = ["Instruments"]


#: Seconds, from 5 ms to 5 min: the SDK's default buckets assume milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
#: Seconds, from 0.25 ms to 1 s: a checkpoint is one small transaction.
CHECKPOINT_BUCKETS = (0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class Instruments:
    """Histograms, counters and the active-runs gauge named in the telemetry contract."""

    def __init__(self, meter: Meter) -> None:
        self.run_duration = meter.create_histogram(
            attrs.METRIC_RUN_DURATION,
            unit="s",
            description="Duration of workflow runs",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.step_duration = meter.create_histogram(
            attrs.METRIC_STEP_DURATION,
            unit="s",
            description="Duration of step attempts",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.events_streamed = meter.create_counter(
            attrs.METRIC_EVENTS_STREAMED, unit="{event}", description="Events written to streams"
        )
        self.runs_active = meter.create_up_down_counter(
            attrs.METRIC_RUNS_ACTIVE, unit="{run}", description="Runs in progress"
        )
        self.step_retries = meter.create_counter(
            attrs.METRIC_STEP_RETRIES, unit="{retry}", description="Step attempts that are retried"
        )
        self.runs_resumed = meter.create_counter(
            attrs.METRIC_RUNS_RESUMED, unit="{run}", description="Runs resumed after a crash"
        )
        self.steps_replayed = meter.create_counter(
            attrs.METRIC_STEPS_REPLAYED,
            unit="{invocation}",
            description="Step invocations run again after a crash or restore",
        )
        self.runs_parked = meter.create_up_down_counter(
            attrs.METRIC_RUNS_PARKED,
            unit="{run}",
            description="Durable runs released while they wait for an event",
        )
        self.checkpoint_duration = meter.create_histogram(
            attrs.METRIC_CHECKPOINT_DURATION,
            unit="s",
            description="Duration of one commit of a durable run's journal",
            explicit_bucket_boundaries_advisory=CHECKPOINT_BUCKETS,
        )
