"""Fixtures shared by the whole suite: captured telemetry and in-memory providers.

The session fixture ``phoenix`` (tests/phoenix_fixture.py) is registered here, so that
every module that asks for it shares one Phoenix server.
"""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from _full_stack import Stack
from _full_stack import compose_stack
from _full_stack import docker_problem
from _full_stack import local_stack
from _postgres import PostgresServer
from phoenix_fixture import phoenix_server  # noqa: F401 - the session fixture "phoenix"
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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The observability stack, healthy: deploy/compose with Docker, else deploy/local.

    One per test module (tests/test_full_stack.py, tests/test_full_stack_faults.py), torn
    down after it: its ports are the compose file's, so there is one at a time.
    """
    if docker_problem() is None:
        running, teardown = compose_stack(f"stepstream-fullstack-{os.getpid()}")
    else:
        running, teardown = local_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield running
    finally:
        teardown()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server from Debian's packages on 127.0.0.1, for the whole session."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A Postgres server this test alone uses: the test stops and starts it."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database for durable runs: a SQLite file, or a Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'durable.sqlite'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database_url()
