"""Durable runs: a run survives a crash or a restart (``pip install 'stepstream[durable]'``).

``MyWorkflow(durable=True)`` keeps its runs in ``.stepstream/durable.sqlite``;
``MyWorkflow(runtime=DBOSRuntime(...))`` chooses the database and when it launches (the
peer's API, ``llama_agents.dbos.DBOSRuntime``). See docs/durable.md for the guarantees.
"""

from __future__ import annotations

from stepstream.durable._records import RunRecord, RunState, RunWatcher
from stepstream.durable._runtime import DBOSRuntime, default_runtime

__all__ = ["DBOSRuntime", "RunRecord", "RunState", "RunWatcher", "default_runtime"]
