"""The journal writer: one thread per process, group commit of every run's batches.

A run's journal batch is one row of DBOS's streams table, at the stream's first free
offset, as DBOS's own step-context stream write makes it. The writer takes everything
the runs queued, writes it with one pre-built statement in one transaction (group commit
across runs), and tells each batch's future. The statement checks in the same
transaction that the writing execution still owns the run's DBOS workflow (DBOS's
ownership token, cleared by a cancel and changed by a hand-off), as DBOS's writes do.
When the database is away it waits for it, without limit (counted in metrics, see
:mod:`._metrics`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from typing import Any

from dbos._error import DBOSWorkflowCancelledError, DBOSWorkflowConflictIDError
from dbos._sys_db import _dbos_streams_channel

from stepstream._text import error_text
from stepstream.durable import _metrics

__all__ = ["STREAM", "Item", "stop_writer", "writer"]

#: The DBOS stream that holds a run's journal.
STREAM = "stepstream"
_log = logging.getLogger("stepstream")
_GROUP = 500  # batches per group commit at most (SQLite binds at most 32,766 values)
_ATTEMPTS = 3  # tries at once of a group commit whose connection was lost or database busy
_BACKOFF_MAX = 2.0  # then waits between tries double up to this (seconds), without limit


#: One queued write: workflow id, ownership token, DBOS function id, value, its
#: serialization, and the future told the outcome (None, or the error to raise).
Item = tuple[str, str, int, str | None, str, "asyncio.Future[BaseException | None]"]


class _Writer:
    """The process's journal writer thread: group commit of every run's queued batches.

    Takes everything queued, writes it with one statement in one transaction on a
    connection of its own from DBOS's pool, commits, and tells each batch's future.
    """

    def __init__(self, sys_db: Any) -> None:
        self.sys_db = sys_db
        self.serializer = sys_db.serializer
        engine = sys_db.engine
        self._streams = _table_name(engine, sys_db.tables.streams)
        self._status = _table_name(engine, sys_db.tables.workflow_status)
        self._qmark = engine.dialect.paramstyle == "qmark"
        self._sqlite = engine.dialect.name == "sqlite"
        self._autocommit = engine.dialect.name == "postgresql"
        self._sql: dict[int, str] = {}
        self._queue: list[Item] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._away_since = 0.0  # when the database was last found away (monotonic)
        self._conn: Any = None
        self._thread = threading.Thread(target=self._loop, name="stepstream-journal", daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def _statement(self, rows: int) -> str:
        """INSERT one stream row per queued batch whose workflow the writer still owns."""
        sql = self._sql.get(rows)
        if sql is None:
            mark = "?" if self._qmark else "%s"
            values = ", ".join([f"({', '.join([mark] * 6)})"] * rows)
            lock = "" if self._sqlite else " FOR NO KEY UPDATE OF w"
            # The names are DBOS's tables, quoted by the dialect; every value is bound.
            sql = self._sql[rows] = (
                f"INSERT INTO {self._streams} (workflow_uuid, function_id, key, value, "  # noqa: S608
                f'serialization, "offset") SELECT v.column1, v.column3, v.column4, v.column5, '
                f'v.column6, COALESCE((SELECT MAX(s."offset") FROM {self._streams} s WHERE '
                f"s.workflow_uuid = v.column1 AND s.key = v.column4), -1) + 1 "
                f"FROM (VALUES {values}) AS v JOIN {self._status} w ON w.workflow_uuid = "
                f"v.column1 AND w.owner_xid = v.column2 WHERE true{lock} "
                f"RETURNING workflow_uuid"
            )
        return sql

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait()
                if not self._queue:
                    break
                items, self._queue = self._queue[:_GROUP], self._queue[_GROUP:]
            outcomes = self._write(items)
            by_loop: dict[Any, list[tuple[Any, BaseException | None]]] = {}
            for item, outcome in zip(items, outcomes, strict=True):
                future = item[5]
                by_loop.setdefault(future.get_loop(), []).append((future, outcome))
            for loop, told in by_loop.items():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(_tell, told)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _connect(self) -> Any:
        """A connection of DBOS's engine, the writer's own (out of the pool).

        On Postgres it runs in autocommit: the one statement is its own transaction, one
        round trip per group commit (no BEGIN, no COMMIT). On SQLite, DBOS's connections
        begin IMMEDIATE transactions: the statement and its commit.
        """
        conn = self.sys_db.engine.raw_connection()
        if self._autocommit:
            conn.driver_connection.autocommit = True
        conn.detach()  # never handed back to DBOS with the writer's settings
        return conn

    def _write(self, items: list[Item]) -> list[BaseException | None]:
        params: list[Any] = []
        for workflow_id, owner, function_id, value, serialization, _ in items:
            params += (workflow_id, owner, function_id, STREAM, value, serialization)
        sql = self._statement(len(items))
        failures = 0
        while True:
            try:
                written = self._execute(sql, params)
                break
            except Exception as exc:  # noqa: BLE001 - told to the runs, as a value
                with contextlib.suppress(Exception):
                    self._conn.rollback()
                with contextlib.suppress(Exception):
                    self._conn.invalidate()  # a fresh connection for the next attempt
                self._conn = None
                if not _transient(exc):
                    return [exc] * len(items)
                failures += 1
                if failures >= _ATTEMPTS and self._away(failures, exc):
                    return [exc] * len(items)  # the runtime stopped meanwhile
        if failures >= _ATTEMPTS:
            _log.warning("stepstream: the durable database is back; the journals are written again")
            _metrics.database_back(time.monotonic() - self._away_since)
        notify = getattr(self.sys_db, "_signal_notification", None)
        outcomes: list[BaseException | None] = []
        for workflow_id, *_ in items:
            if workflow_id in written:
                if notify is not None:
                    notify(_dbos_streams_channel, f"{workflow_id}::{STREAM}")
                outcomes.append(None)
            else:
                outcomes.append(self._not_owned(workflow_id))
        return outcomes

    def _execute(self, sql: str, params: list[Any]) -> set[str]:
        """Run the statement (and commit it); the workflows whose rows it wrote."""
        if self._conn is None:
            self._conn = self._connect()
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, params)
            written = {row[0] for row in cursor.fetchall()}
        finally:
            cursor.close()
        if not self._autocommit:
            self._conn.commit()
        return written

    def _away(self, failures: int, error: Exception) -> bool:
        """The database is unreachable (or busy): wait before trying again, as DBOS does.

        The runs' journals wait with it: nothing is lost, nothing is given up on. The
        wait doubles up to :data:`_BACKOFF_MAX` s. True when the writer is stopped meanwhile.
        """
        if failures == _ATTEMPTS:
            self._away_since = time.monotonic()
            _metrics.database_away()
            _log.warning(
                "stepstream: the durable database cannot be written (%s: %s); the journals "
                "wait and are written once it is back",
                type(error).__name__,
                error_text(error),
            )
        delay = min(_BACKOFF_MAX, 0.1 * 2 ** (failures - _ATTEMPTS))
        with self._cond:
            return self._cond.wait_for(lambda: self._stopped, timeout=delay)

    def _not_owned(self, workflow_id: str) -> BaseException:
        found = self.sys_db.list_workflows(
            workflow_ids=[workflow_id], load_input=False, load_output=False
        )
        if found and str(found[0].status) == "CANCELLED":
            return DBOSWorkflowCancelledError(
                f"Workflow {workflow_id} is cancelled. Aborting function."
            )
        return DBOSWorkflowConflictIDError(workflow_id)


def _table_name(engine: Any, table: Any) -> str:
    """The quoted name of one of DBOS's tables, with the schema DBOS maps it to."""
    preparer = engine.dialect.identifier_preparer
    schema = table.schema
    translate = engine.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(schema, schema)
    name = preparer.quote(table.name)
    return name if schema is None else f"{preparer.quote_schema(schema)}.{name}"


def _transient(exc: Exception) -> bool:
    """A lost connection or a busy database: worth a retry on a fresh connection."""
    # By name, whatever the driver (sqlite3, psycopg: its AdminShutdown, when the server
    # stops, is an OperationalError too).
    return any(c.__name__ in {"OperationalError", "InterfaceError"} for c in type(exc).__mro__)


def _tell(told: list[tuple[Any, BaseException | None]]) -> None:
    for future, outcome in told:
        if not future.done():
            future.set_result(outcome)


_WRITERS: list[_Writer] = []


def writer(sys_db: Any) -> _Writer:
    """The journal writer of DBOS's system database ``sys_db`` (a new one after a relaunch)."""
    if _WRITERS and _WRITERS[0].sys_db is sys_db:
        return _WRITERS[0]
    stop_writer()
    _WRITERS.append(_Writer(sys_db))
    return _WRITERS[0]


def stop_writer() -> None:
    """Stop the writer thread (it writes what is queued first)."""
    while _WRITERS:
        _WRITERS.pop().stop()
