"""Replicas through an outage of their Postgres: nothing lost, nothing taken over, counted.

Two ``stepstream serve --durable postgresql://...`` replicas on a Postgres server of this
test's own, stopped for 4 s (twice the replicas' lease) while a run on each is in its
second step. Real processes on 127.0.0.1 (Debian's Postgres).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from _postgres import PostgresServer
from test_durable_server import effects
from test_durable_server import frames
from test_durable_server import result
from test_durable_server import start
from test_scale_out import LEASE
from test_scale_out import logged
from test_scale_out import replica

pytest.importorskip("dbos")

OUTAGE = 2 * LEASE + 0.5


def metric_points(telemetry: Path, metric: str) -> list[dict[str, Any]]:
    """The data points of ``metric`` in the last export of a replica's metrics.jsonl."""
    found: list[dict[str, Any]] = []
    for line in (telemetry / "metrics.jsonl").read_text().splitlines():
        for resource in json.loads(line)["resourceMetrics"]:
            for scope in resource["scopeMetrics"]:
                for each in scope["metrics"]:
                    if each["name"] == metric:
                        kind = each.get("sum") or each.get("histogram") or {}
                        found = list(kind.get("dataPoints", []))
    return found


def test_replicas_wait_out_a_database_outage_and_count_it(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    """Postgres stopped for twice the lease while a run on each replica is mid-step: both
    runs finish with their results, each step ran once, every seq was streamed once, no
    replica took over the other's runs (their leases lapsed with the database), and each
    replica's metrics count one outage of about the time the database was away."""
    url = own_postgres.database_url("outage")
    first = replica(tmp_path, url, "a")
    second = replica(tmp_path, url, "b")
    try:
        start(first.url, "chain", "c1", x=1)
        start(second.url, "chain", "c2", x=2)
        for server, run in ((first, "c1"), (second, "c2")):
            frames(server.url, run, params={"after_sequence": "-1"}, until=lambda f: len(f) == 3)
        time.sleep(0.3)  # step one's completion is committed
        own_postgres.stop()
        down = time.monotonic()
        (tmp_path / "gate").touch()  # step two ends: its events and checkpoint wait
        time.sleep(OUTAGE)
        own_postgres.start()
        assert result(first.url, "c1", timeout=90)["result"] == {"total": 22}
        assert result(second.url, "c2", timeout=90)["result"] == {"total": 32}
        assert time.monotonic() - down >= OUTAGE
        assert sorted(effects(tmp_path)) == sorted(["one", "two", "three"] * 2)
        for server, run in ((first, "c1"), (second, "c2")):
            whole = frames(server.url, run, params={"after_sequence": "-1"})
            assert [f.seq for f in whole] == list(range(len(whole)))
            labels = [f.data["value"].get("label", f.type) for f in whole]
            assert labels == ["one:0", "one:1", "two:0", "two:1", "three:0", "StopEvent"]
        assert logged(first, "run_failed_over") == []
        assert logged(second, "run_failed_over") == []
    finally:
        first.stop()  # SIGTERM: the metrics are flushed
        second.stop()
    for name in ("a", "b"):
        telemetry = tmp_path / f"telemetry-{name}"
        [outages] = metric_points(telemetry, "stepstream.database.outages")
        assert int(outages["asInt"]) == 1
        [duration] = metric_points(telemetry, "stepstream.database.outage.duration")
        assert int(duration["count"]) == 1
        assert OUTAGE - 1 <= duration["sum"] <= OUTAGE + 60
