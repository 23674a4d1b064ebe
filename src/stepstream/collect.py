"""``stepstream.collect``: the names of LlamaIndex's ``workflows.collect``.

LlamaIndex marks a ``list[E]`` fan-in step parameter with
``Annotated[list[E], Collect(Take(n))]``. stepstream defines these names so that such
code imports, but does not run ``list[E]`` parameters yet: a workflow with one is
reported when it is instantiated, with the stepstream way to join events
(``ctx.collect_events(ev, [E] * n)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stepstream.errors import WorkflowValidationError

__all__ = ["All", "Cardinality", "Collect", "Take"]


@dataclass(frozen=True)
class Cardinality:
    """How many events a fan-in collects."""


@dataclass(frozen=True)
class All(Cardinality):
    """Every event of the fan-out."""


@dataclass(frozen=True)
class Take(Cardinality):
    """The first ``n`` events (``n`` an integer >= 1)."""

    n: int

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            msg = f"Take(n) requires an integer n >= 1, got {self.n!r}"
            raise WorkflowValidationError(msg)


@dataclass(frozen=True)
class Collect:
    """Marks a ``list[E]`` step parameter as a fan-in of ``cardinality`` events."""

    cardinality: Cardinality = field(default_factory=All)
