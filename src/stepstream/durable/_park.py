"""Parking: a durable run that only waits for events is released, and reloaded when one comes.

A run whose every step in flight is suspended in ``ctx.wait_for_event`` (or that has none
in flight: one step asked, another takes the answer) and has nothing queued, for
``DBOSRuntime(idle_release_after=...)`` seconds, is *released*: its journal records a
checkpoint and a ``{"k": "park"}`` entry, its task ends (its Run, Context and journal are
then garbage unless a caller holds its handler), and its DBOS workflow is marked parked
(:mod:`._park_io`), which neither DBOS's recovery nor any queue takes up.

An event sent to it (``handler.ctx.send_event`` on a handler of it, ``runtime.send_event``
or the server's ``POST /events/{id}``, from any process sharing the database) goes to the
run's inbox, then the run is unparked: DBOS's queue reloads it in whichever process takes
it, from the park's checkpoint, with the inbox's events (:func:`taken_up`). Handlers of
the released run that a caller still holds in this process follow the reloaded run
(:class:`ParkedView`): their stream goes on, ``await handler`` returns its result.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, cast

from stepstream._routing import RunState
from stepstream.durable import _park_io
from stepstream.durable._inputs import send_each
from stepstream.durable._stream import Replay, decode_event
from stepstream.errors import WorkflowError
from stepstream.events import StopEvent

if TYPE_CHECKING:
    from stepstream._outcome import Outcome
    from stepstream._runtime import Run
    from stepstream.durable._journal import RunJournal
    from stepstream.durable._runtime import DBOSRuntime
    from stepstream.durable._stream import JournalStream
    from stepstream.events import Event

__all__ = [
    "RELEASING",
    "IdleTimer",
    "Parking",
    "Released",
    "last_inbox",
    "last_park",
    "taken_up",
]

_log = logging.getLogger("stepstream")

#: Set in a released run's DBOS workflow task as it ends: DBOS then logs that the task was
#: cancelled, which is how a parked run's workflow is left untouched, not news.
RELEASING: ContextVar[bool] = ContextVar("stepstream_releasing", default=False)


class _QuietRelease(logging.Filter):
    """Drops DBOS's warning about the cancelled task of a run being released."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (RELEASING.get() and record.getMessage().startswith("Asyncio task cancelled"))


_quiet = _QuietRelease()


class IdleTimer:
    """Notices when one run becomes idle (every step waits), and releases it once it stays so."""

    __slots__ = ("_handle", "_journal", "_parking", "activity")

    def __init__(self, parking: Parking, journal: RunJournal) -> None:
        self._parking = parking
        self._journal = journal
        self._handle: asyncio.TimerHandle | None = None
        #: Counts what happened in the run (completions, waits, events sent).
        self.activity = 0

    def touch(self, run: Run) -> None:
        """Something happened: the idle clock starts over (if some step waits at all)."""
        self.activity += 1
        self.cancel()
        # Checked once the loop turns: a completing step frees its slot after this.
        run.loop.call_soon(self._check, run, self.activity)

    def cancel(self) -> None:
        """Stop the clock."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()

    def _check(self, run: Run, mark: int) -> None:
        after = self._parking.idle_after
        if mark == self.activity and after is not None and _idle(run):
            self._handle = run.loop.call_later(after, self._fire, run, mark)

    def _fire(self, run: Run, mark: int) -> None:
        self._handle = None
        if mark == self.activity and _idle(run):
            self._parking.spawn(self._parking.release(self._journal, run, mark))


def _idle(run: Run) -> bool:
    """Whether only an event from outside can move ``run`` on.

    Nothing is queued, and every step in flight (if any: the ask-then-answer form has
    none) waits for an event.
    """
    return run.router.state is RunState.RUNNING and run.idle()


class Released:
    """A released run's journal: when its release is complete, and what its holders see."""

    __slots__ = ("done", "view")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.view: ParkedView | None = None


class ParkedView:
    """What holders of a released run's handler see: its stream, readers and outcome."""

    __slots__ = ("__weakref__", "outcome", "readers", "stream")

    def __init__(self, stream: JournalStream, readers: list[Replay], outcome: Any) -> None:
        self.stream = stream
        self.readers = readers
        self.outcome: asyncio.Future[Outcome] = outcome

    def follow(self, journal: RunJournal, run: Run) -> None:
        """Follow the reloaded ``run``: its recorded events and its outcome."""
        journal.readers.append(_Relay(self))
        run.outcome.add_done_callback(self._ended)

    def _ended(self, outcome: asyncio.Future[Outcome]) -> None:
        if not self.outcome.done() and not outcome.cancelled():
            self.outcome.set_result(outcome.result())


class _Relay(Replay):
    """A reader of the reloaded run that writes into the released run's stream."""

    def __init__(self, view: ParkedView) -> None:  # no queue of its own: it forwards
        self._view = view

    def feed(self, seq: int, event: Event, terminal: bool) -> None:
        """Forward a recorded event (or the terminal one) to the old stream and its readers."""
        stream = self._view.stream
        if terminal:
            assert isinstance(event, StopEvent)  # noqa: S101 - the journal's terminal
            stream.seq = seq
            stream.close(event)
            return
        stream.seq = seq + 1
        stream.publish(event)
        for reader in self._view.readers:
            reader.feed(seq, event, False)


class Parking:
    """The parked runs of one runtime: releasing them, delivering to them, reloading them."""

    def __init__(self, runtime: DBOSRuntime, idle_after: float | None) -> None:
        self.runtime = runtime
        self.idle_after = idle_after
        self._tasks: set[asyncio.Task[Any]] = set()
        self._views: dict[str, weakref.ref[ParkedView]] = {}
        dbos_log = logging.getLogger("dbos")
        if idle_after is not None and _quiet not in dbos_log.filters:
            dbos_log.addFilter(_quiet)

    def watch(self, journal: RunJournal) -> None:
        """Release ``journal``'s run when it idles (unless idle release is off)."""
        if self.idle_after is not None:
            journal.idle = IdleTimer(self, journal)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` as a task of the runtime (awaited by :meth:`aclose`)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("stepstream: parking a durable run failed", exc_info=task.exception())

    async def aclose(self) -> None:
        """Let releases and deliveries under way finish (bounded), then stop them."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=5.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)

    # -- releasing --------------------------------------------------------------------------

    async def release_all(self) -> int:
        """Release every run of this process that only waits for events; how many were."""
        jobs = self._release_idle()
        if not jobs:
            return 0
        await asyncio.wait(jobs)
        return sum(1 for job in jobs if not job.cancelled() and job.result())

    def _release_idle(self) -> list[asyncio.Task[Any]]:
        """Start the release of each idle run (the releases, not this frame, hold them)."""
        jobs = []
        for handler in list(self.runtime._runs.values()):  # noqa: SLF001
            run = handler._run  # noqa: SLF001 - the runtime's own run
            journal = cast("RunJournal | None", run.journal)
            if journal is not None and not journal.parked and _idle(run):
                mark = journal.idle.activity if journal.idle is not None else None
                jobs.append(self.spawn(self.release(journal, run, mark)))
        return jobs

    async def release(self, journal: RunJournal, run: Run, mark: int | None) -> bool:
        """Release idle ``run``: record the park, end its task, mark its workflow parked.

        ``mark`` is the idle clock's count when the release was decided (None: release
        it if it is idle now). False when the run turned out not to be idle.
        """
        run_id = journal.run_id
        stopped = await self._stop(journal, run, mark)
        del journal, run  # the run's objects go now, not when the database has answered
        if stopped is None:
            return False
        done, taken = stopped
        try:
            if not await _park_io.mark_parked(run_id):
                _log.warning("stepstream: durable run %s could not be parked", run_id)
        finally:
            done.set_result(None)  # deliveries sent meanwhile go to the inbox now
        self.runtime._parked(run_id)  # noqa: SLF001
        # An event sent from another process during the release reloads it at once.
        if await _park_io.read_inbox(run_id, taken + 1):
            await _park_io.unpark(run_id)
        return True

    async def _stop(
        self, journal: RunJournal, run: Run, mark: int | None
    ) -> tuple[asyncio.Future[None], int] | None:
        """Record the park and end the run's task; None if the run is not idle after all.

        Returns the future deliveries wait on, and the last inbox offset the run took.
        """
        handler = self.runtime._runs.get(journal.run_id)  # noqa: SLF001 - the runtime's own
        if handler is None or not journal.park(run):
            return None
        try:
            await journal.recorded()
        except WorkflowError:
            return None  # the run stopped meanwhile (its end, a failure, a shutdown)
        timer = journal.idle
        if (timer is not None and mark is not None and timer.activity != mark) or not _idle(run):
            return None  # an event came while the park was recorded: it stays (void park)
        released = journal.released = Released(run.loop)
        journal.parked = True  # from now on, what the caller sends goes to deliver()
        view = released.view = ParkedView(journal.stream, journal.readers, run.outcome)
        run_id = journal.run_id
        self._views[run_id] = weakref.ref(view, lambda ref: self._forget(run_id, ref))
        task = handler._task  # noqa: SLF001 - the runtime owns its runs' tasks
        task.cancel()
        await asyncio.wait([t for t in (task, journal.writer) if t is not None])
        return released.done, journal.inbox_taken

    def _forget(self, run_id: str, ref: weakref.ref[ParkedView]) -> None:
        if self._views.get(run_id) is ref:
            del self._views[run_id]

    # -- delivering -------------------------------------------------------------------------

    def deliver(self, journal: RunJournal, event: Event, target: str | None) -> None:
        """A holder of the released run's handler sent ``event``: deliver it (in a task)."""
        entry = journal.inputs.entry(journal.serializer, event, target)
        self.spawn(self._deliver(journal, event, target, entry))

    async def _deliver(
        self, journal: RunJournal, event: Event, target: str | None, entry: dict[str, Any]
    ) -> None:
        try:
            released = journal.released
            if released is not None:
                await asyncio.shield(released.done)
            live = self.runtime._runs.get(journal.run_id)  # noqa: SLF001
            if live is not None and not live.done():  # reloaded here: hand it over
                await live.send_event(event, target)
            else:
                await self.post(journal.run_id, entry)
        except Exception as exc:  # noqa: BLE001 - the sender learns it, as a value
            journal.inputs.settle(1, exc)
            return
        journal.inputs.settle(1, None)

    def cancel(self, run_id: str) -> None:
        """Cancel parked run ``run_id`` for good: reload it here, then cancel it (a task)."""
        self.spawn(self._cancel(run_id))

    async def _cancel(self, run_id: str) -> None:
        handler = await self.runtime.handler(run_id)  # reloads a parked run
        await handler.cancel_run()

    async def post(self, run_id: str, entry: dict[str, Any]) -> None:
        """Record ``entry`` in the run's inbox, then reload the run if it is parked."""
        await _park_io.post_inbox(run_id, entry)
        await _park_io.unpark(run_id)

    async def drain(self, run_id: str) -> None:
        """Hand run ``run_id``, executing here, what its inbox got since it last looked.

        Each event taken is recorded with its inbox offset (so no later reload takes it
        again), then routed. Reads are one at a time per run.
        """
        handler = self.runtime._runs.get(run_id)  # noqa: SLF001
        if handler is None:
            return
        run = handler._run  # noqa: SLF001 - the runtime's own run
        journal = run.journal
        if journal is None or journal.parked:
            return
        journal_ = cast("RunJournal", journal)  # the runtime's own journal
        if journal_.inbox_lock is None:
            journal_.inbox_lock = asyncio.Lock()
        async with journal_.inbox_lock:
            fresh = await _park_io.read_inbox(run_id, journal_.inbox_taken + 1)
            for entry in fresh:
                if run.router.state is not RunState.RUNNING:
                    return
                event = decode_event(journal_.serializer, entry["ev"], f"the inbox of run {run_id}")
                target = entry.get("to")
                journal_.take_inbox([entry])
                problem = run.router.send_problem(event, target, from_caller=True)
                if problem is not None:
                    _log.warning(
                        "stepstream: durable run %s cannot take the %s sent to it (%s); it is "
                        "dropped",
                        run_id,
                        type(event).__name__,
                        problem,
                    )
                elif run._tg is None:  # noqa: SLF001 - its task has not started yet
                    run._early.append((event, None, target))  # noqa: SLF001
                else:
                    run.dispatch(event, None, target)

    # -- reloading --------------------------------------------------------------------------

    def reloaded(self, run_id: str, journal: RunJournal, run: Run) -> None:
        """Run ``run_id`` was reloaded here: handlers of its released self follow it."""
        ref = self._views.pop(run_id, None)
        view = ref() if ref is not None else None
        if view is not None:
            view.follow(journal, run)


def last_park(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The last park entry of a journal, if its run was parked (nothing follows it)."""
    return entries[-1] if entries and entries[-1]["k"] == "park" else None


def last_inbox(entries: list[dict[str, Any]]) -> int:
    """The highest inbox offset the run took (-1: none)."""
    return max((e["inbox"] for e in entries if e["k"] == "in" and "inbox" in e), default=-1)


async def taken_up(
    run: Run, serializer: Any, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The inbox events ``run`` has not taken yet: sent to it; their entries to record.

    Called before the run's journal is attached, so the sends are not recorded twice.
    """
    run_id = run.info.run_id
    fresh = await _park_io.read_inbox(run_id, last_inbox(entries) + 1)
    send_each(run, serializer, fresh, f"the inbox of run {run_id}")
    for entry in fresh:
        entry["ns"] = entry.get("ns") or time.time_ns()
    return fresh
