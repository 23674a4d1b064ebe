"""``stepstream.collect``: how a ``list[E]`` fan-in step releases (LlamaIndex's names).

A step returning ``list[E]`` fans out: each element runs as its own event, and the list
is one *batch*. A step taking ``events: list[E]`` is a join: it fires once per batch, with
every ``E`` the batch's steps returned, in the order they finished. Mark the parameter
``Annotated[list[E], Collect(...)]`` to choose when:

- ``Collect()`` or ``Collect(All())`` (the same as a bare ``list[E]``): once the batch's
  work is done, with everything.
- ``Collect(Take(n))``: at the n-th arrival, with the first n; later arrivals never reach
  the join (the other branches still run). If the batch ends with fewer, it fires then
  with what arrived.

A batch with no elements (``return []``) fires its joins once with ``[]``; a branch whose
step returns None is dropped. Events sent with ``ctx.send_event`` are not members of a
batch (join those with ``ctx.collect_events``).
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
