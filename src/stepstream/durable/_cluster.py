"""Replicas on one Postgres database: who is alive, and who takes over a dead one's runs.

Each process whose runtime has an instance id (``DBOSRuntime(instance_id=...)``, ``stepstream
serve --instance-id``) is a *replica*: its instance id is its DBOS executor id, so DBOS's
start-up recovery of a replica takes up only its own pending runs. On Postgres, each
replica holds a *lease*: its row in the table ``stepstream_replicas`` (beside DBOS's
tables), whose ``heartbeat_at`` it renews every third of ``failover_after`` seconds. A
replica that finds another's lease expired (the database's clock: no skew between
machines) claims it, in one statement (an ``UPDATE ... RETURNING`` that only one of
several survivors can win: the row lock serializes them and the losers' re-check sees
the claim), then asks DBOS's recovery to take up that executor's pending runs: each is
re-enqueued on DBOS's internal queue (its ownership token cleared, so a replica that
was only slow writes nothing more to it), and whichever replica's queue takes it
resumes it from its journal. A claim is tried again a lease later while the replica is
still dead (a claimant that died during the take-over is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import sqlalchemy as sa
from opentelemetry import metrics

from stepstream._version import __version__
from stepstream.durable import _dbos_replicas
from stepstream.errors import WorkflowRuntimeError, WorkflowValidationError
from stepstream.telemetry import attributes as attrs

__all__ = [
    "DEFAULT_FAILOVER_AFTER",
    "INSTANCE_ENV",
    "Cluster",
    "check_failover_after",
    "check_instance_id",
    "default_instance_id",
]

#: The environment variable ``stepstream serve`` reads the instance id from.
INSTANCE_ENV = "STEPSTREAM_INSTANCE_ID"
#: The table of leases, in the schema of DBOS's tables.
TABLE = "stepstream_replicas"
#: Seconds without a renewal after which a replica's runs are taken over by another.
DEFAULT_FAILOVER_AFTER = 15.0
#: Renewals per lease: a replica renews its lease every ``failover_after / 3`` seconds.
_RENEWALS = 3
_LONGEST_ID = 100
_log = logging.getLogger("stepstream")


def default_instance_id() -> str:
    """``$STEPSTREAM_INSTANCE_ID``, else the host's name: stable across restarts."""
    return os.environ.get(INSTANCE_ENV, "").strip() or socket.gethostname() or "stepstream"


def check_instance_id(instance_id: object) -> None:
    """Refuse an instance id that is not a short printable name."""
    if (
        isinstance(instance_id, str)
        and 0 < len(instance_id) <= _LONGEST_ID
        and instance_id.isprintable()
        and instance_id.strip() == instance_id
    ):
        return
    msg = (
        f"instance_id={instance_id!r}: give each replica a name of its own (1 to 100 "
        "printable characters, no surrounding spaces) that it keeps across restarts, "
        "e.g. its host or pod name"
    )
    raise WorkflowValidationError(msg)


def check_failover_after(seconds: object) -> None:
    """Refuse a ``failover_after`` that is not None or at least one second."""
    if seconds is None or (
        isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 1
    ):
        return
    msg = (
        f"failover_after={seconds!r}: give the seconds after which a replica that stopped "
        "renewing its lease has its runs taken over by another (at least 1), or None to "
        "leave a dead replica's runs until it restarts"
    )
    raise WorkflowValidationError(msg)


#: Told of each run taken over: (run ids, from instance); the runtime counts and logs them.
TakenOver = Callable[[list[str], str], None]


class Cluster:
    """This replica's lease, and the take-over of the runs of replicas whose lease expired."""

    def __init__(
        self,
        url: str,
        schema: str,
        instance_id: str,
        failover_after: float | None,
        taken: TakenOver,
    ) -> None:
        self.instance_id = instance_id
        self.failover_after = failover_after
        self._taken = taken
        self._token = secrets.token_hex(8)
        self._host = socket.gethostname()
        self._table = f'"{schema}".{TABLE}'
        self._engine = sa.create_engine(
            sa.engine.make_url(url).set(drivername="postgresql+psycopg"),
            pool_size=1,
            max_overflow=1,
            pool_pre_ping=True,
        )
        self._task: asyncio.Task[None] | None = None
        self._queues: dict[str, str] = {}
        self._depths: dict[str, int] = {}  # workflow -> runs enqueued, not started
        # One thread of its own: DBOS's pool may be busy, and a lease must not wait on it.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stepstream-lease")

    @property
    def interval(self) -> float:
        """Seconds between two renewals (and looks for expired leases)."""
        return (self.failover_after or 15.0) / _RENEWALS

    def check(self) -> None:
        """Before the launch: refuse to start if a live process of this host has this id.

        (DBOS's start-up recovery would otherwise move that process's runs here.) A
        database, schema or table not made yet holds no lease.
        """
        try:
            with self._engine.begin() as c:
                row = c.execute(
                    sa.text(
                        f"SELECT host, pid, now() - heartbeat_at < make_interval(secs => :lease) "  # noqa: S608
                        f"FROM {self._table} WHERE instance_id = :me"
                    ),
                    {"me": self.instance_id, "lease": self.failover_after or 15.0},
                ).first()
        except Exception:  # noqa: BLE001 - nothing to find yet (or DBOS will say why)
            return
        if row is not None and row[2] and row[0] == self._host and _alive(int(row[1])):
            msg = (
                f"instance id {self.instance_id!r} is in use by another live process of this "
                f"host (pid {row[1]}) on the same database; give each replica its own "
                f"--instance-id (or ${INSTANCE_ENV})"
            )
            raise WorkflowRuntimeError(msg)

    def open(self) -> None:
        """After the launch: create the table if missing and take this replica's lease."""
        with self._engine.begin() as c:
            c.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})"))
            c.execute(sa.text(_CREATE.format(table=self._table)))
        self._renew()

    def start(self) -> None:
        """Renew the lease and look for expired ones, in a task of the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="stepstream durable lease"
            )

    def watch_queues(self, queues: dict[str, str]) -> None:
        """Measure the depth of ``queues`` (DBOS queue name -> workflow) at each renewal."""
        self._queues = queues
        if queues:
            _observe_depths(self._depths)

    def discard(self) -> None:
        """Let go of the connections (the launch failed)."""
        self._pool.shutdown(wait=False)
        self._engine.dispose()

    async def aclose(self) -> None:
        """Stop renewing: the lease expires (the runs left pending move unless it restarts)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pool.shutdown(wait=False)
        self._engine.dispose()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        healthy_since: float | None = loop.time()  # open() renewed the lease
        while True:
            await asyncio.sleep(self.interval)
            try:
                try:
                    await loop.run_in_executor(self._pool, self._renew)
                except Exception:
                    healthy_since = None
                    raise
                if healthy_since is None:
                    healthy_since = loop.time()
                if self._queues:
                    depths = await loop.run_in_executor(
                        None, _dbos_replicas.queue_depths, list(self._queues)
                    )
                    self._depths.clear()
                    self._depths.update({self._queues[q]: n for q, n in depths.items()})
                # After an outage of the database, every lease looks expired: a replica
                # claims none before it has renewed its own for a whole lease, by which
                # time the live replicas have renewed theirs.
                lease = self.failover_after
                if lease is not None and loop.time() - healthy_since >= lease:
                    for dead in await loop.run_in_executor(self._pool, self._claim):
                        moved = await loop.run_in_executor(
                            self._pool, _dbos_replicas.recover_executor, dead
                        )
                        if moved:
                            self._taken(moved, dead)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database is away: next time
                _log.debug("stepstream: the lease could not be renewed: %s", exc)

    def _renew(self) -> None:
        with self._engine.begin() as c:
            c.execute(
                sa.text(
                    f"INSERT INTO {self._table} (instance_id, host, pid, token, heartbeat_at, "  # noqa: S608
                    "started_at) VALUES (:me, :host, :pid, :token, now(), now()) ON CONFLICT "
                    "(instance_id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                    "token = EXCLUDED.token, heartbeat_at = now()"
                ),
                {
                    "me": self.instance_id,
                    "host": self._host,
                    "pid": os.getpid(),
                    "token": self._token,
                },
            )

    def _claim(self) -> list[str]:
        """The replicas whose lease expired that this one takes over (one statement)."""
        with self._engine.begin() as c:
            rows = c.execute(
                sa.text(_CLAIM.format(table=self._table)),
                {"me": self.instance_id, "lease": self.failover_after},
            ).fetchall()
        return [str(row[0]) for row in rows]


_LOCK_KEY = 7_321_764_001  # serializes the CREATE TABLE of replicas starting at once
_CREATE = (
    "CREATE TABLE IF NOT EXISTS {table} (instance_id text PRIMARY KEY, host text NOT NULL, "
    "pid integer NOT NULL, token text NOT NULL, heartbeat_at timestamptz NOT NULL, "
    "started_at timestamptz NOT NULL, taken_over_by text, taken_over_at timestamptz)"
)
# Only one of several survivors wins a row: the UPDATE locks it, and a second UPDATE
# waiting on the lock re-checks the WHERE against the winner's row (claimed now).
_CLAIM = (
    "UPDATE {table} SET taken_over_by = :me, taken_over_at = now() "
    "WHERE instance_id <> :me AND heartbeat_at < now() - make_interval(secs => :lease) "
    "AND (taken_over_at IS NULL OR taken_over_at < heartbeat_at "
    "OR taken_over_at < now() - make_interval(secs => :lease)) RETURNING instance_id"
)


_GAUGE: list[dict[str, int]] = []


def _observe_depths(depths: dict[str, int]) -> None:
    """Report ``depths`` (workflow -> runs waiting) as ``stepstream.queue.depth``."""
    if _GAUGE:
        _GAUGE[0] = depths
        return
    _GAUGE.append(depths)

    def observe(_: Any) -> list[metrics.Observation]:
        return [metrics.Observation(n, {attrs.WORKFLOW: w}) for w, n in list(_GAUGE[0].items())]

    meter = metrics.get_meter("stepstream", __version__)
    meter.create_observable_gauge(
        attrs.METRIC_QUEUE_DEPTH,
        callbacks=[observe],
        unit="{run}",
        description="Durable runs enqueued on their workflow's cluster-wide queue, not started",
    )


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process (a container restarted with the same pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
