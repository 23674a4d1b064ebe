"""Fixtures shared by the whole suite: captured telemetry and in-memory providers."""

import logging
from collections.abc import Iterator

import pytest

from stepstream.testing import CapturedTelemetry
from stepstream.testing import capture_telemetry


@pytest.fixture
def tel(caplog: pytest.LogCaptureFixture) -> Iterator[CapturedTelemetry]:
    """The telemetry of every run the test starts; the SDK never sees a span ended twice."""
    caplog.set_level(logging.WARNING)
    with capture_telemetry() as captured:
        yield captured
    twice = [r for r in caplog.get_records("call") if "end() on an ended span" in r.getMessage()]
    assert twice == [], [r.getMessage() for r in twice]


@pytest.fixture
def sdk() -> CapturedTelemetry:
    """In-memory SDK providers that record only the workflows they are handed to."""
    return CapturedTelemetry()
