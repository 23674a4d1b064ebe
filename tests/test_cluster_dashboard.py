"""The cluster view's queries (dashboards/cluster.json) against real data of real replicas.

The observability stack (deploy/compose with Docker, else deploy/local's collector,
Jaeger and Prometheus with compose's configs) receives OTLP from three ``stepstream
serve --durable`` replicas on one Postgres, started by deploy/local's cluster (``up
--replicas 3``: Debian's Postgres, the compose replicas' command made local, each its
own ``--instance-id``). The test drives the cluster app (deploy/cluster_app.py) so that
every panel has something to show: runs on each replica, runs waiting in the ``batch``
queue, ``approval`` runs parked, and runs of a replica killed with SIGKILL taken over
(and resumed) by the others. Then every PromQL expression of the cluster view, its
variables substituted, must return numbers from Prometheus, and the per-replica ones
must name the replicas by their instance ids.
"""

import functools
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from _dashboard_queries import CLUSTER_DASHBOARD
from _dashboard_queries import dashboard_queries
from _dashboard_queries import substitute
from _full_stack import PROMETHEUS
from _full_stack import Stack
from _full_stack import local_stack_module
from _full_stack import poll
from _full_stack import request

pytest.importorskip("dbos")

#: Seconds without a lease renewal after which a replica's runs move (short, for a test).
LEASE = 3.0


class Cluster:
    """The replicas' URLs and the means to kill one."""

    def __init__(self, service: str, urls: dict[str, str], local: Any) -> None:
        self.service = service
        self.urls = urls
        self.local = local

    def start(self, replica: str, workflow: str, **start: Any) -> str:
        """Start a run through ``replica``; its handler id."""
        response = httpx.post(
            f"{self.urls[replica]}/workflows/{workflow}/run-nowait",
            json={"start_event": start},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["handler_id"])


@pytest.fixture(scope="module")
def cluster(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Postgres and three replicas of deploy/local's cluster, OTLP to the stack's collector."""
    del stack
    module = local_stack_module()
    local = module.LocalStack(tmp_path_factory.mktemp("cluster"))
    service = f"stepstream-cluster-{uuid.uuid4().hex[:8]}"
    env = {
        "OTEL_SERVICE_NAME": service,
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "STEPSTREAM_DEMO_STEP_SECONDS": "0.3",
    }
    flags = {"--failover-after": str(LEASE), "--idle-release-after": "1"}
    try:
        urls = local.cluster.up(3, env, flags)
        yield Cluster(service, urls, local.cluster)
    finally:
        local.cluster.down()
        local.cluster.remove_postgres_data()


def _prometheus(expr: str) -> list[Any]:
    result: list[Any] = request(f"{PROMETHEUS}/api/v1/query", {"query": expr})["data"]["result"]
    return result


def _values(service: str) -> dict[str, str]:
    return {"service": service, "instance": ".*", "workflow": ".*", "__rate_interval": "1m"}


@pytest.fixture(scope="module")
def driven(cluster: Cluster) -> Cluster:
    """Runs on every replica, a queue, parked runs, and a replica killed mid-run."""
    for replica in ("replica-1", "replica-2", "replica-3"):
        for n in range(2):
            cluster.start(replica, "pipeline", items=n)
    for n in range(2):
        cluster.start("replica-1", "approval", question=f"ship {n}?")
    for n in range(8):
        cluster.start("replica-2", "batch", n=n)
    for n in range(3):
        cluster.start("replica-3", "pipeline", items=n, seconds=30)
    time.sleep(2.0)  # the runs are under way; replica-3's metrics are exported
    assert cluster.local.stop("replica-3", signal.SIGKILL)
    return cluster


def test_every_query_of_the_cluster_view_returns_data(driven: Cluster) -> None:
    """Each PromQL expression of cluster.json returns numbers for the replicas' service."""
    values = _values(driven.service)
    queries = [
        q
        for q in dashboard_queries()
        if q.dashboard == CLUSTER_DASHBOARD and q.language == "promql"
    ]
    assert len(queries) == 6
    for query in queries:
        result = poll(query.where, functools.partial(_prometheus, substitute(query.expr, values)))
        assert all(r["value"][1] != "NaN" for r in result), (query.where, result)


def test_the_replicas_are_told_apart_by_their_instance_ids(driven: Cluster) -> None:
    """Runs per replica name each of the three replicas (service_instance_id = --instance-id)."""
    selector = f'stepstream_run_duration_seconds_count{{service_name="{driven.service}"}}'

    def three() -> set[str] | None:
        found = {r["metric"].get("service_instance_id") for r in _prometheus(selector)}
        return found if found >= {"replica-1", "replica-2", "replica-3"} else None

    assert poll("runs of each replica", three) == {"replica-1", "replica-2", "replica-3"}
    variable = next(
        q
        for q in dashboard_queries()
        if q.dashboard == CLUSTER_DASHBOARD and q.where.endswith("variable 'instance'")
    )
    assert variable.expr.endswith(", service_instance_id)")


def test_the_cluster_metrics_show_the_queue_the_parked_runs_and_the_take_over(
    driven: Cluster,
) -> None:
    """The queue was deep, approvals parked, and a survivor took over and resumed runs."""
    service = f'service_name="{driven.service}"'
    depth = poll(
        "a queue depth above 0",
        functools.partial(
            _prometheus,
            f"max_over_time(stepstream_queue_depth{{{service}}}[5m]) > 0",
        ),
    )
    assert depth
    parked = poll(
        "parked approvals",
        functools.partial(_prometheus, f"sum(stepstream_runs_parked{{{service}}}) >= 2"),
    )
    assert float(parked[0]["value"][1]) >= 2
    taken = poll(
        "runs taken over",
        functools.partial(
            _prometheus,
            f"sum by (service_instance_id) (stepstream_runs_failed_over_total{{{service}}})",
        ),
        deadline=120,
    )
    takers = {r["metric"]["service_instance_id"] for r in taken}
    assert takers <= {"replica-1", "replica-2"}, "the dead replica took nothing"
    assert sum(float(r["value"][1]) for r in taken) == 3, taken
    resumed = poll(
        "runs resumed by the survivors",
        functools.partial(
            _prometheus,
            f"sum by (service_instance_id) (stepstream_runs_resumed_total{{{service}}}) > 0",
        ),
    )
    assert {r["metric"]["service_instance_id"] for r in resumed} <= {"replica-1", "replica-2"}
