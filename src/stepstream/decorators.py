"""The ``@step`` decorator.

Decoration only records the function and its options (a :class:`StepConfig`); the
signature is read when the workflow class is first instantiated.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from stepstream._spec import STEP_ATTR, Catch, StepConfig
from stepstream.errors import WorkflowValidationError
from stepstream.retry_policy import RetryPolicy

if TYPE_CHECKING:
    from stepstream.workflow import Workflow

__all__ = ["catch_error", "step"]

F = TypeVar("F", bound=Callable[..., Any])

#: The graph checks one step may skip (LlamaIndex's per-step ``skip_graph_checks``).
STEP_GRAPH_CHECKS = frozenset({"dead_end", "reachability"})


@overload
def step(func: F, /) -> F: ...
@overload
def step(
    *,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    workflow: type[Workflow] | None = None,
    skip_graph_checks: list[str] | None = None,
    accept_event_subclasses: bool = True,
) -> Callable[[F], F]: ...
def step(
    func: F | None = None,
    /,
    *,
    num_workers: int = 4,
    retry_policy: RetryPolicy | None = None,
    timeout: float | None = None,
    workflow: type[Workflow] | None = None,
    skip_graph_checks: list[str] | None = None,
    accept_event_subclasses: bool = True,
) -> F | Callable[[F], F]:
    """Mark a function as a workflow step.

    Use bare (``@step``) or with options (``@step(num_workers=2, timeout=10)``). The
    event parameter's annotation decides which events the step receives; the return
    annotation declares what it may emit. ``workflow=Cls`` attaches a free function
    (no ``self``) to a workflow class. Plain ``def`` steps run in a worker thread.
    Parameters annotated ``Annotated[T, Resource(...)]`` or ``Annotated[T,
    ResourceConfig(...)]`` receive resources (:mod:`stepstream.resource`).
    ``accept_event_subclasses=False`` routes only events of exactly the annotated types
    to the step (by default subclasses too); ``skip_graph_checks=["reachability"]``
    exempts its event types from the consumed-but-never-produced check.
    """
    problems = _check_options(num_workers, retry_policy, timeout)
    unknown = sorted(set(skip_graph_checks or ()) - STEP_GRAPH_CHECKS)
    if unknown:
        problems.append(
            f"unknown graph check name(s) in skip_graph_checks: {', '.join(unknown)}; valid "
            f"names are {', '.join(sorted(STEP_GRAPH_CHECKS))}"
        )
    # The frames above hold the class body (and, for classes defined in a function,
    # that function's locals), where string annotations may point.
    localns = _caller_namespaces()

    def build(name: str, fn: Callable[..., Any]) -> StepConfig:
        return StepConfig(
            name=name,
            fn=fn,
            num_workers=num_workers,
            retry_policy=retry_policy,
            timeout=timeout,
            is_method=workflow is None,
            localns=localns,
            exact=not accept_event_subclasses,
            skip=frozenset(skip_graph_checks or ()),
        )

    decorate: Callable[[F], F] = _recorder("step", problems, build, workflow)
    return decorate(func) if func is not None else decorate


def _recorder(
    kind: str,
    problems: list[str],
    build: Callable[[str, Callable[..., Any]], StepConfig],
    workflow: type[Workflow] | None = None,
) -> Callable[[F], F]:
    """The decorator that records ``build``'s config on a function (or reports problems)."""

    def decorate(fn: F) -> F:
        name = getattr(fn, "__name__", repr(fn))
        if problems:
            msg = f"@{kind} options for step {name!r} are invalid"
            raise WorkflowValidationError(msg, problems)
        config = build(name, fn)
        setattr(fn, STEP_ATTR, config)
        if workflow is not None:
            workflow._add_free_step(config)  # noqa: SLF001 - the decorator is the friend API
        return fn

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


@overload
def catch_error(func: F, /) -> F: ...
@overload
def catch_error(
    *, for_steps: list[str] | None = None, max_recoveries: int = 1
) -> Callable[[F], F]: ...
def catch_error(
    func: F | None = None,
    /,
    *,
    for_steps: list[str] | None = None,
    max_recoveries: int = 1,
) -> F | Callable[[F], F]:
    """Mark a step as the handler of other steps' failures.

    When a step covered by the handler fails (after its retries), the run does not end:
    the handler receives a ``StepFailedEvent`` (the step, its input event, the
    exception, the attempts) and may emit any event, a StopEvent included, to go on.
    ``for_steps`` names the steps covered (default: every step no other handler names);
    ``max_recoveries`` bounds how often the handler may recover one chain of events.
    The handler's event parameter must be annotated ``StepFailedEvent``.
    """
    problems = []
    if (
        isinstance(max_recoveries, bool)
        or not isinstance(max_recoveries, int)
        or max_recoveries < 1
    ):
        problems.append(f"max_recoveries must be an integer >= 1, got {max_recoveries!r}")
    steps: object = for_steps  # checked as the untyped value callers may pass
    if steps is not None and (
        not isinstance(steps, list | tuple) or not all(isinstance(s, str) for s in steps)
    ):
        problems.append(f"for_steps must be None or a list of step names, got {for_steps!r}")
    localns = _caller_namespaces()

    def build(name: str, fn: Callable[..., Any]) -> StepConfig:
        return StepConfig(
            name=name,
            fn=fn,
            num_workers=1,
            retry_policy=None,
            timeout=None,
            is_method=True,
            localns=localns,
            catch=Catch(tuple(for_steps) if for_steps is not None else None, max_recoveries),
        )

    decorate: Callable[[F], F] = _recorder("catch_error", problems, build)
    return decorate(func) if func is not None else decorate
