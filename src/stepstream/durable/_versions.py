"""Which version of a workflow's code started a durable run, and what a mismatch does.

A run records its workflow's version when it starts: ``Workflow(version=...)`` if given,
else a fingerprint of the step graph (``graph-`` and a hash of the steps' names, the
event types each accepts and returns with their JSON Schemas, and the state type's).
A process that resumes the run after a restart compares it with its own; on a mismatch
the runtime's ``on_version_mismatch`` decides: ``"leave"`` the run pending for a process
with the run's version (the default), ``"resume"`` it on this version anyway, or
``"fail"`` it (recorded as failed, with :class:`~stepstream.errors.DurableVersionError`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any, Literal

import orjson

from stepstream._schema import event_schema
from stepstream.context.serializers import JsonSerializer
from stepstream.durable import _dbos_io
from stepstream.errors import DurableVersionError, WorkflowValidationError
from stepstream.events import Event, WorkflowFailedEvent

if TYPE_CHECKING:
    from stepstream.durable._runtime import DBOSRuntime
    from stepstream.workflow import Workflow

__all__ = ["POLICIES", "Policy", "Versions", "check_policy", "fingerprint", "mismatch"]

_log = logging.getLogger("stepstream")

Policy = Literal["leave", "resume", "fail"]
POLICIES: tuple[Policy, ...] = ("leave", "resume", "fail")


def check_policy(value: object) -> Policy:
    """``on_version_mismatch``, checked."""
    for policy in POLICIES:
        if value == policy:
            return policy
    msg = (
        f"DBOSRuntime(on_version_mismatch=...) must be one of {', '.join(map(repr, POLICIES))} "
        f"(what a run started by another version of its workflow's code does here), got "
        f"{value!r}"
    )
    raise WorkflowValidationError(msg)


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _opaque(value: object) -> str:
    """A value JSON cannot hold, as its type: never its repr (an address may be in it)."""
    return f"<{_name(type(value))}>"


def fingerprint(workflow: Workflow) -> str:
    """The version of ``workflow``'s code that its durable runs record."""
    given = workflow._version  # noqa: SLF001 - the engine is the workflow's friend
    if given is not None:
        return given
    graph = workflow._graph  # noqa: SLF001
    types: dict[str, type[Event]] = {}
    steps = []
    for spec in sorted(graph.specs, key=lambda s: s.name):
        accepts = [_name(t) for t in spec.accepts]
        returns = [_name(t) for t in spec.returns]
        types.update({_name(t): t for t in (*spec.accepts, *spec.returns)})
        steps.append([spec.name, accepts, returns, [_name(t) for t in spec.slots]])
    state = graph.state_type
    shape = {
        "steps": steps,
        "events": {name: event_schema(cls) for name, cls in sorted(types.items())},
        "state": [_name(state), event_schema(state)],
    }
    text = orjson.dumps(shape, option=orjson.OPT_SORT_KEYS, default=_opaque)
    return "graph-" + hashlib.sha256(text).hexdigest()[:16]


def mismatch(
    run_id: str, workflow: str, recorded: str, current: str, policy: Policy
) -> DurableVersionError:
    """The error a run of another version's code meets here, saying what became of it."""
    if policy == "fail":
        outcome = "it is ended as failed (on_version_mismatch='fail')"
    else:
        outcome = (
            f"it is left pending: a process running version {recorded} resumes it when it "
            "launches; or construct the DBOSRuntime with on_version_mismatch='resume' to "
            "resume it on this version, or 'fail' to end it"
        )
    msg = (
        f"durable run {run_id} of workflow {workflow} was started by version {recorded} of "
        f"its code, and this process has version {current}; {outcome}"
    )
    return DurableVersionError(msg, run_id, workflow, recorded, current)


class Versions:
    """A runtime's versions of its workflows' code, and its check of the runs it resumes."""

    def __init__(self, runtime: DBOSRuntime, policy: object) -> None:
        self.policy = check_policy(policy)
        self._runtime = runtime
        self._known: dict[str, str] = {}

    def of(self, workflow: Workflow) -> str:
        """The version of ``workflow``'s code (worked out once per workflow name)."""
        version = self._known.get(workflow.workflow_name)
        if version is None:
            version = self._known[workflow.workflow_name] = fingerprint(workflow)
        return version

    async def check(
        self, workflow: Workflow, run_id: str, recorded: str | None
    ) -> dict[str, Any] | None:
        """Before run ``run_id`` resumes: None to go on, else as the policy says.

        ``"leave"`` raises CancelledError (DBOS then records nothing: the run stays
        pending); ``"fail"`` records the run's end and returns that end entry.
        """
        current = self.of(workflow)
        if recorded is None or recorded == current:  # or started before versions were kept
            return None
        name = workflow.workflow_name
        error = mismatch(run_id, name, recorded, current, self.policy)
        if self.policy == "resume":
            _log.warning("stepstream: %s; resuming it (on_version_mismatch='resume')", error)
            return None
        _log.error("stepstream: %s", error)
        self._runtime._refuse(run_id, error)  # noqa: SLF001 - its runtime
        if self.policy == "fail":
            return await _fail_run(workflow, run_id, error)
        raise asyncio.CancelledError


async def _fail_run(workflow: Workflow, run_id: str, error: Exception) -> dict[str, Any]:
    """Record run ``run_id`` as failed with ``error`` (in its DBOS workflow); its end entry."""
    batches = await _dbos_io.read_batches(run_id)
    entries = [entry for batch in batches for entry in batch]
    for entry in entries:
        if entry["k"] == "end":
            return entry
    seqs = [e["seq"] for e in entries if e["k"] == "ev"]
    serializer = workflow.serializer or JsonSerializer()
    terminal = WorkflowFailedEvent(step_name="<version>", exception=error)
    end = {
        "k": "end",
        "status": "error",
        "terminal": serializer.serialize(terminal),
        "seq": max(seqs) + 1 if seqs else 0,
        "ns": time.time_ns(),
    }
    await _dbos_io.write_batch([end])
    return end
