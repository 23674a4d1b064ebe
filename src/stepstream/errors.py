"""Errors raised by stepstream.

Every error stepstream raises derives from :class:`WorkflowError`, and each also
derives from the builtin a caller would naturally catch (the state store and the
serializers of :mod:`stepstream.context` raise plain builtins, ``ValueError`` and
``TypeError`` mostly, as LlamaIndex Workflows does). The names of LlamaIndex
Workflows' ``workflows.errors`` are all here, arranged so that an ``except`` clause
written for LlamaIndex catches what stepstream raises in the same situation, also
where stepstream finds the problem earlier::

    WorkflowError (Exception)
    ├── WorkflowValidationError (ValueError)     a workflow definition or start input is wrong
    │   └── WorkflowConfigurationError           the step graph is wrong (found when the
    │                                            workflow class is instantiated)
    ├── WorkflowRuntimeError (RuntimeError)      the API was used wrongly while running
    │   ├── WorkflowStepDoesNotExistError        send_event(..., step=...) names no step
    │   ├── ContextStateError                    a Context call that cannot work here
    │   └── DurableVersionError                  a durable run was started by another
    │                                            version of its workflow's code
    ├── WorkflowTimeoutError (TimeoutError)      the run or a step ran out of time
    ├── WorkflowCancelledByUser                  the run was cancelled (LlamaIndex's name)
    │   └── WorkflowCancelledError               what stepstream raises when it is
    ├── ContextSerdeError (ValueError)           a Context could not be (de)serialised
    ├── DurableStoreError (OSError)              a durable run's database cannot be used
    └── WorkflowDone                             LlamaIndex's internal end-of-run signal

``ContextSerdeError``, ``ContextStateError`` and ``WorkflowDone`` exist for code ported
from LlamaIndex Workflows (``except ContextStateError:``); stepstream does not raise them
yet.

Messages name the step, event type, field or key at fault and say what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "ContextSerdeError",
    "ContextStateError",
    "DurableStoreError",
    "DurableVersionError",
    "WorkflowCancelledByUser",
    "WorkflowCancelledError",
    "WorkflowConfigurationError",
    "WorkflowDone",
    "WorkflowError",
    "WorkflowRuntimeError",
    "WorkflowStepDoesNotExistError",
    "WorkflowStreamOverflowError",
    "WorkflowTimeoutError",
    "WorkflowValidationError",
]


class WorkflowError(Exception):
    """Base class of every error stepstream raises."""


class WorkflowValidationError(WorkflowError, ValueError):
    """A workflow definition, a step signature or the start input is invalid.

    ``problems`` holds one line per problem found; the message lists them all.
    """

    def __init__(self, summary: str, problems: Iterable[str] = ()) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        message = summary
        if self.problems:
            message += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class WorkflowConfigurationError(WorkflowValidationError):
    """The workflow's step graph is invalid; raised when its class is instantiated.

    LlamaIndex Workflows raises ``WorkflowConfigurationError`` at construction for a
    missing or ambiguous start or stop event and for a workflow without steps, and
    ``WorkflowValidationError`` from ``run()`` for the other graph problems. stepstream
    checks the whole graph at construction and reports every problem in one error of
    this class, so ``except WorkflowConfigurationError`` and ``except
    WorkflowValidationError`` both catch it.
    """


class WorkflowRuntimeError(WorkflowError, RuntimeError):
    """The runtime API was used in a way that cannot work (named in the message)."""


class WorkflowStepDoesNotExistError(WorkflowRuntimeError):
    """A call addressed a step the workflow does not have: ``send_event(ev, step="x")``.

    LlamaIndex Workflows raises ``WorkflowRuntimeError`` there, so this class derives
    from it: ``except WorkflowRuntimeError`` and ``except WorkflowStepDoesNotExistError``
    both catch it.
    """


class WorkflowStreamOverflowError(WorkflowRuntimeError):
    """A run's unread stream reached ``Workflow(stream_limit=...)`` (overflow "fail")."""


class ContextStateError(WorkflowRuntimeError):
    """A Context method was called where it cannot work (LlamaIndex: on the wrong face).

    A ``WorkflowRuntimeError`` too: LlamaIndex documents some of these calls as raising
    ``WorkflowRuntimeError``, so code written against either name catches it.
    """


class ContextSerdeError(WorkflowError, ValueError):
    """A Context could not be serialised or restored from its serialised form."""


class WorkflowTimeoutError(WorkflowError, TimeoutError):
    """A run, a step or a wait ran out of time.

    ``timeout`` is the limit in seconds; ``active_steps`` the steps still running.
    """

    def __init__(
        self, message: str, *, timeout: float | None = None, active_steps: Iterable[str] = ()
    ) -> None:
        self.timeout = timeout
        self.active_steps: tuple[str, ...] = tuple(active_steps)
        super().__init__(message)


class WorkflowCancelledByUser(WorkflowError):  # noqa: N818 - LlamaIndex Workflows' name
    """The run was cancelled: what ``except`` clauses written for LlamaIndex catch.

    stepstream raises its subclass :class:`WorkflowCancelledError` (with a message
    saying how the run was cancelled) rather than an alias of this class: the class
    name in tracebacks, logs and telemetry (``error_type``) stays stepstream's, while
    ``except WorkflowCancelledByUser`` and ``except WorkflowCancelledError`` both catch
    it.
    """


class WorkflowCancelledError(WorkflowCancelledByUser):
    """The run was cancelled by ``handler.cancel_run()`` or by cancelling its task."""


class DurableStoreError(WorkflowError, OSError):
    """The database of durable runs is missing, damaged or unreachable.

    ``location`` is the database file (SQLite) or URL the message names.
    """

    def __init__(self, message: str, location: object) -> None:
        super().__init__(message)
        self.location = str(location)


class DurableVersionError(WorkflowRuntimeError):
    """A durable run was started by another version of its workflow's code than this one.

    ``run_id`` and ``workflow`` name the run; ``recorded`` is the version that started it
    and ``current`` this process's (``Workflow(version=...)``, else a step graph hash).
    """

    def __init__(
        self,
        message: str,
        run_id: str = "",
        workflow: str = "",
        recorded: str = "",
        current: str = "",
    ) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.workflow = workflow
        self.recorded = recorded
        self.current = current


class WorkflowDone(WorkflowError):  # noqa: N818 - LlamaIndex Workflows' name
    """LlamaIndex Workflows' internal signal that a run has ended; never raised here."""
