"""A workflow class's compiled step graph: specs, routing table, start event and state types.

:func:`compiled_graph` reads the ``@step`` configs of a workflow class (its methods,
inherited ones, and free functions attached with ``@step(workflow=...)``), validates
them together and caches the result on the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from stepstream._levels import bindings
from stepstream._spec import STEP_ATTR, StepConfig, StepSpec, read_spec
from stepstream._validation import catchers, graph_problems, state_type
from stepstream.errors import WorkflowConfigurationError
from stepstream.events import Event, StartEvent

__all__ = ["Graph", "add_free_step", "compiled_graph", "step_names"]

_GRAPH_ATTR = "_stepstream_graph"
_FREE_ATTR = "_stepstream_free_steps"


class Graph:
    """Immutable after construction apart from the routing cache (filled on demand)."""

    def __init__(self, specs: Sequence[StepSpec]) -> None:
        self.specs: tuple[StepSpec, ...] = tuple(specs)
        self.names: tuple[str, ...] = tuple(s.name for s in self.specs)
        self.index: dict[str, int] = {name: i for i, name in enumerate(self.names)}
        self._routes: dict[type[Event], tuple[int, ...]] = {}
        # The @catch_error handler covering each step (its index), if any.
        self.catcher: tuple[int | None, ...] = catchers(self.specs)
        starts = [t for s in self.specs for t in s.accepts if issubclass(t, StartEvent)]
        self.start_event_type: type[StartEvent] = starts[0] if starts else StartEvent
        self.state_type: type[BaseModel] = state_type(self.specs)
        # Fan-out, fan-in and several-parameter steps: a run of this graph tracks
        # batches and slots (stepstream._fanrun); other graphs pay nothing for them.
        self.fan = any(s.fan_out or s.fan_in is not None or s.slots for s in self.specs)
        # For each fan-out step, the indices of the list[E] steps its batches release.
        self.bindings: tuple[tuple[int, ...], ...] = bindings(self.specs, self.catcher)

    def spec(self, name: str) -> StepSpec | None:
        """Return the spec of step ``name``, or None."""
        i = self.index.get(name)
        return None if i is None else self.specs[i]

    def route(self, event_type: type[Event]) -> tuple[int, ...]:
        """Indices of the steps that accept events of ``event_type`` (cached)."""
        try:
            return self._routes[event_type]
        except KeyError:
            found = tuple(i for i, s in enumerate(self.specs) if s.accepts_type(event_type))
            self._routes[event_type] = found
            return found

    def takers(self, event_type: type[Event]) -> list[str]:
        """Names of the steps that accept ``event_type``."""
        return [self.names[i] for i in self.route(event_type)]


def add_free_step(cls: type[Any], config: StepConfig) -> None:
    """Attach a free function's step to ``cls`` (and so to its subclasses)."""
    if _FREE_ATTR not in cls.__dict__:
        setattr(cls, _FREE_ATTR, {})
    cls.__dict__[_FREE_ATTR][config.name] = config
    # Invalidate the compiled graph of this class and its subclasses.
    for klass in [cls, *_subclasses(cls)]:
        if _GRAPH_ATTR in klass.__dict__:
            delattr(klass, _GRAPH_ATTR)


def step_names(cls: type[Any]) -> set[str]:
    """Names of the steps ``cls`` has (methods, inherited ones and attached functions)."""
    return {c.name for c in _collect_configs(cls).values()}


def compiled_graph(cls: type[Any], skip: frozenset[str] = frozenset()) -> Graph:
    """Return the validated step graph of workflow class ``cls`` (compiled once, cached).

    ``skip`` names graph checks to leave out (see ``_validation.graph_problems``).
    """
    cache: dict[frozenset[str], Graph] | None = cls.__dict__.get(_GRAPH_ATTR)
    if cache is None:
        cache = {}
        setattr(cls, _GRAPH_ATTR, cache)
    cached = cache.get(skip)
    if cached is not None:
        return cached
    configs = _collect_configs(cls)
    problems: list[str] = []
    if not configs:
        problems.append(f"workflow {cls.__name__} has no steps; decorate its methods with @step")
    specs = [read_spec(c, problems) for c in configs.values()]
    if specs:
        problems.extend(graph_problems(specs, skip))
    if problems:
        msg = f"workflow {cls.__name__} is invalid ({len(problems)} problem(s)):"
        raise WorkflowConfigurationError(msg, problems)
    graph = Graph(specs)
    cache[skip] = graph
    return graph


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    sub: type
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _collect_configs(cls: type[Any]) -> dict[str, StepConfig]:
    configs: dict[str, StepConfig] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            config = getattr(value, STEP_ATTR, None)
            if isinstance(config, StepConfig) and config.is_method:
                configs[attr] = config
            elif attr in configs and callable(value):
                del configs[attr]  # overridden by a plain method
        configs.update(vars(klass).get(_FREE_ATTR, {}))
    return configs
