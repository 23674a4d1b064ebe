"""Process settings for serving (``stepstream serve``, or ``serve(tune_process=True)``).

Made once the server has started; ``stepstream serve --no-tune`` leaves Python's
defaults alone. An application that mounts :class:`~stepstream.server.WorkflowServer`
decides for its own process: these settings are process-wide.

Garbage collection. A full collection traverses every tracked object, and the loop does
nothing else meanwhile: with the modules a server imports (about 50,000 objects) each
one held the loop 20-35 ms, a dozen times a second under load.

- ``gc.freeze()``: what exists after start-up (modules, classes, the app) moves to the
  permanent generation, which collections skip; a full collection then only traverses
  what the server made since (its handlers, its runs in flight): a few milliseconds.
- a higher first threshold (:data:`GC_THRESHOLDS`, against Python's ``(700, 10, 10)``):
  fewer young collections, so fewer objects of the requests in flight are promoted to
  the older generations, whose growth is what triggers full collections. Not much
  higher: a collection of the middle generation traverses up to ten times that many
  objects (at 5,000 those took 10-15 ms).

The GIL's switch interval (:data:`SWITCH_INTERVAL`, against Python's 5 ms). The
exporters run in threads of their own. Each time the event loop's thread gives the GIL
up (a socket write, a wait for events) while an exporter has work, it waits for the
exporter to give it back, up to a switch interval; a busy pass of the loop gives it up
many times. At 1 ms, a burst of 500 runs exporting over OTLP held the loop 30 ms at
worst instead of 40-50.
"""

from __future__ import annotations

import gc
import sys

__all__ = ["GC_THRESHOLDS", "SWITCH_INTERVAL", "tune_process"]

#: The collector's thresholds while serving (generation 0, 1, 2).
GC_THRESHOLDS = (2000, 10, 10)
#: Seconds a thread holds the GIL before yielding it to another that waits.
SWITCH_INTERVAL = 0.001


def tune_process() -> None:
    """Collect once, freeze what is left, raise the GC thresholds, shorten the switch interval."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    sys.setswitchinterval(SWITCH_INTERVAL)
