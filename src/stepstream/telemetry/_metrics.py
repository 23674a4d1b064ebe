"""The five stepstream instruments, created once per meter (OpenTelemetry API only)."""

from __future__ import annotations

from opentelemetry.metrics import Meter

from stepstream.telemetry import attributes as attrs

__all__ = ["Instruments"]


#: Seconds, from 5 ms to 5 min: the SDK's default buckets assume milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


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
