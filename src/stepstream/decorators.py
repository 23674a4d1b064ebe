"""The ``@step`` decorator.

Decoration only records the function and its options (a :class:`StepConfig`); the
signature is read when the workflow class is first instantiated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from stepstream._spec import STEP_ATTR, StepConfig
from stepstream.errors import WorkflowValidationError
from stepstream.retry_policy import RetryPolicy

if TYPE_CHECKING:
    from stepstream.workflow import Workflow

__all__ = ["step"]

F = TypeVar("F", bound=Callable[..., Any])


@overload
def step(func: F, /) -> F: ...
@overload
def step(
    *,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    workflow: type[Workflow] | None = None,
) -> Callable[[F], F]: ...
def step(
    func: F | None = None,
    /,
    *,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    workflow: type[Workflow] | None = None,
) -> F | Callable[[F], F]:
    """Mark a function as a workflow step.

    Use bare (``@step``) or with options (``@step(num_workers=2, timeout=10)``). The
    event parameter's annotation decides which events the step receives; the return
    annotation declares what it may emit. ``workflow=Cls`` attaches a free function
    (no ``self``) to a workflow class. Plain ``def`` steps run in a worker thread.
    Parameters annotated ``Annotated[T, Resource(...)]`` or ``Annotated[T,
    ResourceConfig(...)]`` receive resources (:mod:`stepstream.resource`).
    """
    problems = _check_options(num_workers, retry_policy, timeout)
    # The frames above hold the class body (and, for classes defined in a function,
    # that function's locals), where string annotations may point.
    localns = _caller_namespaces()

    def decorate(fn: F) -> F:
        name = getattr(fn, "__name__", repr(fn))
        if problems:
            msg = f"@step options for step {name!r} are invalid"
            raise WorkflowValidationError(msg, problems)
        config = StepConfig(
            name=name,
            fn=fn,
            num_workers=num_workers,
            retry_policy=retry_policy,
            timeout=timeout,
            is_method=workflow is None,
            localns=localns,
        )
        setattr(fn, STEP_ATTR, config)
        if workflow is not None:
            workflow._add_free_step(config)  # noqa: SLF001 - the decorator is the friend API
        return fn

    if func is not None:
        return decorate(func)
    return decorate


def _check_options(num_workers: int, retry_policy: object, timeout: float | None) -> list[str]:
    problems = []
    if not isinstance(num_workers, int) or num_workers < 1:
        problems.append(f"num_workers must be an int >= 1, got {num_workers!r}")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        problems.append(
            f"retry_policy must have a next(elapsed_time, attempts, error) method, "
            f"got {type(retry_policy).__name__}"
        )
    if timeout is not None and not timeout > 0:
        problems.append(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return problems


def _caller_namespaces() -> dict[str, Any]:
    ns: dict[str, Any] = {}
    # Frame 0 is this function, 1 is step(), 2 the code that applied the decorator.
    frame = sys._getframe(2)  # noqa: SLF001 - reading the caller's scope is the point
    # Outer scope first, so the class body's names win.
    for f in (frame.f_back, frame):
        if f is not None and f.f_code.co_name != "<module>":
            ns.update(f.f_locals)
    return ns
