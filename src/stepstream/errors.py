"""Errors raised by stepstream.

Every error stepstream raises derives from :class:`WorkflowError`, and each also
derives from the builtin a caller would naturally catch (the state store and the
serializers of :mod:`stepstream.context` raise plain builtins, ``ValueError`` and
``TypeError`` mostly, as LlamaIndex Workflows does)::

    WorkflowError (Exception)
    ├── WorkflowValidationError (ValueError)   a workflow definition or start input is wrong
    ├── WorkflowRuntimeError (RuntimeError)    the API was used wrongly while running
    ├── WorkflowTimeoutError (TimeoutError)    the run or a step ran out of time
    └── WorkflowCancelledError                 the run was cancelled with cancel_run()

Messages name the step, event type, field or key at fault and say what to do.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "WorkflowCancelledError",
    "WorkflowError",
    "WorkflowRuntimeError",
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


class WorkflowRuntimeError(WorkflowError, RuntimeError):
    """The runtime API was used in a way that cannot work (named in the message)."""


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


class WorkflowCancelledError(WorkflowError):
    """The run was cancelled by ``handler.cancel_run()`` or by cancelling its task."""
