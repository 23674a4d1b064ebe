"""What makes a ``DBOSRuntime`` a replica among others on one Postgres (docs/scale-out.md).

Mixed into :class:`~stepstream.durable.DBOSRuntime`: its lease (:mod:`._cluster`), what it
does when it takes a dead replica's runs over (counts them, tells its watchers: the
server logs ``run_failed_over``), and the DBOS queue of each workflow with
``num_concurrent_runs``, whose runs then start wherever the cluster has a free slot.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace

from stepstream.context.serializers import JsonSerializer
from stepstream.durable import _dbos_io, _dbos_replicas
from stepstream.durable._cluster import Cluster
from stepstream.durable._metrics import count_failed_over

if TYPE_CHECKING:
    from stepstream.durable._park import Parking
    from stepstream.durable._records import RunRecord, RunWatcher
    from stepstream.durable._versions import Versions
    from stepstream.events import Event
    from stepstream.workflow import Workflow

__all__ = ["QUEUE_PREFIX", "ReplicaService"]

#: The name of a workflow's cluster-wide queue: this, then its ``workflow_name``.
QUEUE_PREFIX = "stepstream.runs:"

_log = logging.getLogger("stepstream")


class ReplicaService:
    """The replica side of a runtime (see the module docstring)."""

    database_url: str
    instance_id: str | None
    failover_after: float | None
    _workflows: dict[str, Workflow]
    _queues: dict[str, Any]
    _parking: Parking
    _watchers: list[RunWatcher]
    _versions: Versions

    def _ready(self) -> None:  # pragma: no cover - DBOSRuntime's
        """Launch the runtime if it may be launched lazily (DBOSRuntime._ready)."""
        raise NotImplementedError

    if TYPE_CHECKING:  # RuntimeService's, next in DBOSRuntime's bases (not overridden)

        async def runs(
            self,
            run_ids: list[str] | None = None,
            limit: int | None = None,
            ended: bool | None = None,
        ) -> list[RunRecord]: ...

    def _replica(self) -> Cluster | None:
        """This replica's lease: with an instance id, on Postgres (None otherwise)."""
        if self.instance_id is None or _dbos_io.sqlite_path(self.database_url) is not None:
            return None
        return Cluster(
            self.database_url, "dbos", self.instance_id, self.failover_after, self._taken_over
        )

    def _declare_queues(self, cluster: Cluster) -> None:
        """A DBOS queue per workflow with ``num_concurrent_runs``: its cluster-wide limit."""
        for name, workflow in self._workflows.items():
            limit = workflow._num_concurrent_runs  # noqa: SLF001 - the engine is a friend
            if limit is not None:
                self._queues[name] = _dbos_replicas.declare_queue(QUEUE_PREFIX + name, limit)
        # Labelled as the runs' other metrics are (their telemetry name).
        labels = {n: self._workflows[n]._run_name for n in self._queues}  # noqa: SLF001
        cluster.watch_queues({QUEUE_PREFIX + n: label for n, label in labels.items()})

    def queued(self, workflow: Workflow) -> bool:
        """Whether runs of ``workflow`` start through its cluster-wide queue (:meth:`enqueue`).

        So they do on a replica (an instance id, on Postgres) for a workflow with
        ``num_concurrent_runs``: at most that many run at once in all the replicas.
        """
        return workflow.workflow_name in self._queues

    async def enqueue(self, workflow: Workflow, start: Event, run_id: str) -> None:
        """Start run ``run_id`` of ``workflow`` through its cluster-wide queue.

        Returns once the run is recorded as enqueued. Whichever replica's queue takes
        it (once fewer than ``num_concurrent_runs`` runs of the workflow run in the
        cluster) starts it there, as a child of the current span (the request's).
        """
        from stepstream.durable._runtime import _run_function  # noqa: PLC0415 - a cycle

        self._ready()
        queue = self._queues[workflow.workflow_name]
        payload = {"ev": (workflow.serializer or JsonSerializer()).serialize(start), "queued": True}
        span = otel_trace.get_current_span().get_span_context()
        parent = (
            [format(span.trace_id, "032x"), format(span.span_id, "016x")] if span.is_valid else None
        )
        await _dbos_replicas.enqueue_workflow(
            queue,
            _run_function,
            run_id,
            workflow.workflow_name,
            payload,
            parent,
            time.time_ns(),
            version=self._versions.of(workflow),
        )

    def _taken_over(self, run_ids: list[str], from_instance: str) -> None:
        """This replica took over the runs ``run_ids`` of the dead replica ``from_instance``."""
        self._parking.spawn(self._tell_taken_over(run_ids, from_instance))

    async def _tell_taken_over(self, run_ids: list[str], from_instance: str) -> None:
        to_instance = self.instance_id or ""
        records = {r.run_id: r.workflow for r in await self.runs(run_ids)}
        for run_id in run_ids:
            workflow = records.get(run_id, "")
            known = self._workflows.get(workflow)
            # Labelled as the run's other metrics are (its telemetry name).
            count_failed_over(known._run_name if known is not None else workflow)  # noqa: SLF001
            _log.info(
                "stepstream: durable run %s of replica %s taken over by %s",
                run_id,
                from_instance,
                to_instance,
            )
            for watcher in self._watchers:
                told = getattr(watcher, "failed_over", None)
                if told is not None:
                    told(run_id, workflow, from_instance, to_instance)
