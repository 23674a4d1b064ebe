"""Garbage-collector settings for a process that serves (``stepstream serve --gc tuned``).

A full collection traverses every tracked object, and the loop does nothing else
meanwhile: with the modules a server imports (about 50,000 objects) each one held the
loop 20-35 ms, a dozen times a second under load. Two changes, made once the server
has started:

- ``gc.freeze()``: what exists after start-up (modules, classes, the app) moves to the
  permanent generation, which collections skip; a full collection then only traverses
  what the server made since (its handlers, its runs in flight): a few milliseconds.
- higher thresholds (:data:`THRESHOLDS`, against Python's ``(700, 10, 10)``): fewer
  young collections, so fewer objects of the requests in flight are promoted to the
  older generations, whose growth is what triggers full collections.

``stepstream serve --gc default`` leaves Python's settings alone. An application that
mounts :class:`~stepstream.server.WorkflowServer` decides for its own process
(``server.serve(tune_gc=True)`` does the same as the command).
"""

from __future__ import annotations

import gc

__all__ = ["THRESHOLDS", "tune_gc"]

#: The collector's thresholds while serving (generation 0, 1, 2).
THRESHOLDS = (5000, 20, 10)


def tune_gc(thresholds: tuple[int, int, int] = THRESHOLDS) -> None:
    """Collect once, freeze what is left (start-up's objects), and raise the thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
