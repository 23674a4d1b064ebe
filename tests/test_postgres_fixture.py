"""The PostgreSQL fixture: a real server on loopback that the durable tests build on."""

from __future__ import annotations

import os

import psycopg
import pytest

from _postgres import PostgresServer


def test_the_server_takes_connections_on_loopback(postgres: PostgresServer) -> None:
    """A query runs; the server listens on 127.0.0.1 only and is ours (its pid)."""
    with psycopg.connect(postgres.url, connect_timeout=10) as conn:
        row = conn.execute(
            "select current_setting('listen_addresses'), pg_backend_pid()"
        ).fetchone()
    assert row is not None
    assert row[0] == "127.0.0.1"
    assert postgres.pid is not None
    os.kill(postgres.pid, 0)  # the postmaster we started is alive


def test_stop_ends_exactly_the_server_it_started() -> None:
    """After stop() the pid is gone and the port refuses connections."""
    server = PostgresServer()
    server.start()
    pid = server.pid
    assert pid is not None
    server.remove()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=3)
