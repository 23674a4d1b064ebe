"""The journal of one durable run, and its writer: one DBOS stream write per batch.

The run (``stepstream._runtime.Run``) tells the journal of each streamed event and of
each step completion; the journal queues entries and the writer, running inside the
run's DBOS workflow, commits everything queued since its last write as one batch (group
commit), then publishes the batch's events to the stream and the observers. Entries:

- ``{"k": "ev", "seq", "ev", "ns", "step"}``: a streamed event;
- ``{"k": "ck", "ctx", "done", "ns"}``: the run saved right after a step completion
  (``ctx`` is the saved-context format, ``done`` the step keys completed since the last
  checkpoint); a batch keeps only its last checkpoint;
- ``{"k": "in", "ev", "to", "ns"}``: an event the caller sent (:mod:`._inputs`), with
  ``inbox`` when it came through the run's inbox while the run was parked;
- ``{"k": "park", "attempt", "ns"}``: the run was released while it waited (:mod:`._park`);
- ``{"k": "rt", ...}``: a retry decided after a step attempt failed (:mod:`._retries`);
- ``{"k": "end", "status", "terminal", "seq", "ns"}``: how the run ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from stepstream import _outcome
from stepstream._instrument import NOOP, Observer, RunInfo, Status, StepInfo
from stepstream._routing import RunState
from stepstream._text import error_text
from stepstream.context.serializers import BaseSerializer
from stepstream.durable import _dbos_io
from stepstream.durable._inputs import CallerEvents
from stepstream.durable._park import RELEASING
from stepstream.durable._retries import RestoredRetries, retry_entry
from stepstream.durable._stream import JournalStream, Replay, decode_event
from stepstream.durable._watch import watch_run
from stepstream.errors import WorkflowRuntimeError
from stepstream.events import Event, StopEvent

if TYPE_CHECKING:
    from stepstream._journal import RetryState
    from stepstream._outcome import Outcome
    from stepstream._runtime import Run
    from stepstream.durable._park import IdleTimer, Parking, Released

__all__ = ["RunJournal"]

_METHODS = [n for n, v in vars(Observer).items() if callable(v) and not n.startswith("_")]
_STEP_ENDS = frozenset({"step_finished", "step_failed", "step_retry"})


class _Deferred(Observer):
    """The run's observer, with ``event_streamed`` called once the event is recorded.

    A step's end (``step_finished``, a final ``step_failed``) is told once the checkpoint
    after it is recorded: a step any observer saw end is never run again. A failure that
    will be retried waits only for the attempt's own events, so that their span events
    land on its span before it ends; ``step_retry`` once the retry is recorded.
    """

    def __init__(self, real: Observer, journal: RunJournal) -> None:
        for name in _METHODS:
            if name not in _STEP_ENDS:
                setattr(self, name, getattr(real, name))
        self.event_streamed = journal.describe  # type: ignore[method-assign]
        self._real = real
        self._journal = journal
        self._failing: tuple[StepInfo, BaseException] | None = None

    def step_finished(self, inv: StepInfo, result: Event | None) -> None:
        """End the step once its completion is recorded."""
        self._journal.after_record(inv, self._real.step_finished, (inv, result))

    def step_failed(
        self, inv: StepInfo, error: BaseException, status: Status, will_retry: bool
    ) -> None:
        """End the failed attempt once recorded (a retried one: once its events are)."""
        args = (inv, error, status, will_retry)
        if will_retry:
            self._failing = (inv, error)  # step_retry follows at once
            self._journal.after_events(inv, self._real.step_failed, args)
        else:
            self._journal.after_record(inv, self._real.step_failed, args)

    def step_retry(self, inv: StepInfo, delay: float) -> None:
        """Record the retry decision; tell the observers once it is recorded."""
        failing, self._failing = self._failing, None
        if failing is not None and failing[0] is inv:
            self._journal.retrying(inv, delay, failing[1])
        self._journal.after_record(inv, self._real.step_retry, (inv, delay))


class RunJournal:
    """Implements the runtime's ``Journal`` seam for one run (see the module docstring)."""

    def __init__(
        self,
        run: Run,
        serializer: BaseSerializer,
        start_args: tuple[Any, ...] | None,
        batches: int = 0,
    ) -> None:
        self.run_id = run.info.run_id
        self.info: RunInfo = run.info
        self.serializer = serializer
        self.observer = run.instrument
        self._observed = run.instrument is not NOOP
        self.stream = JournalStream(run.loop, run.stream.seq, self)
        run.stream = self.stream
        run.observed = True  # every write goes through Run.write, which names its step
        run.instrument = _Deferred(run.instrument, self)
        run.journal = self
        self._entries: list[dict[str, Any]] = []
        self._pending: list[list[Any]] = []  # [event, seq, step attempt, written ns]
        self._done_keys: list[str] = []
        self._wake: asyncio.Future[None] | None = None
        # Done once the end entry is recorded (or the journal failed); and once DBOS has
        # recorded the workflow's end (a new run's; or the journal failed).
        self._ended: asyncio.Future[None] = run.loop.create_future()
        self._recorded: asyncio.Future[None] = run.loop.create_future()
        #: Done once the run's DBOS workflow is recorded and runs (or the journal failed):
        #: from then on every process sharing the database knows the run.
        self.begun: asyncio.Future[None] = run.loop.create_future()
        self._end_run = run.end
        self._aborted = False
        #: What broke the journal (the database, a run id already taken); the run failed.
        self.failure: Exception | None = None
        #: Set when the run was found cancelled in the database (runtime.cancel() or
        #: DBOS's cancel, from any process): how the run ended, recorded by DBOS alone.
        self.cancelled_in_db: Outcome | None = None
        # The DBOS workflow's arguments for a new run; None once the writer is running
        # (a recovered run's writer is the DBOS workflow that recovered it).
        self._start_args = start_args
        self.claimed = start_args is None
        self.batches = batches  # batches recorded, those read back on recovery included
        self.readers: list[Replay] = []
        self.live = True
        self._terminal: tuple[int, StopEvent] | None = None  # once the stream is closed
        self.starter: Any = None  # the DBOS workflow function (set by the runtime)
        self.inputs = CallerEvents(self.run_id, run.loop)
        # Parking (see _park): the idle clock, and once released, the release's state.
        self.parked = False
        self.idle: IdleTimer | None = None
        self.parking: Parking | None = None
        self.released: Released | None = None
        self.inbox_taken = -1  # the last inbox offset the run took
        #: A run started through its workflow's queue, taken up here for the first time.
        self.first_start = False
        self.inbox_lock: asyncio.Lock | None = None  # one inbox read at a time (see _park)
        self.workflow_name = ""  # its workflow's workflow_name (set by the runtime)
        self.writer: asyncio.Task[Any] | None = None  # the DBOS workflow's task
        self.start_kwargs: dict[str, Any] = {}  # its keyword arguments (the same)
        # The retry states read back from the journal (a recovered run's).
        self.restored_retries: RestoredRetries | None = None
        # Checkpoints queued, and recorded (-1 while the run's DBOS workflow is not); a
        # step invocation starts only once every checkpoint queued before it is recorded.
        self._queued = 0
        self._recorded_upto = 0 if start_args is None else -1
        self._gates: list[tuple[int, asyncio.Future[None]]] = []

    # -- the Journal seam (called by the run) -------------------------------------------

    async def run(self, run: Run) -> None:
        """Start the run's DBOS workflow, whose body is :meth:`write_loop`; await it."""
        args = self._start_args
        if args is None:
            return
        info = self.info  # the run span is open now: the trace to continue after a crash
        trace = [info.trace_id, info.span_id] if info.trace_id and info.span_id else None
        try:
            handle = await _dbos_io.start_workflow(
                self.starter, self.run_id, *args, trace, info.start_ns, **self.start_kwargs
            )
            await handle.get_result()
            self._check_claimed()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.cancelled_in_db is None or (task is not None and task.cancelling()):
                raise
            # Cancelled in the database: the DBOS workflow ended without a record.
        except Exception as exc:  # noqa: BLE001 - the run fails with it, as a value
            self._fail(exc)
        finally:
            if not self._recorded.done():
                self._recorded.set_result(None)
            if not self.begun.done():
                self.begun.set_result(None)

    def _check_claimed(self) -> None:
        if not self.claimed:  # DBOS found a workflow of that id: ours never ran
            msg = (
                f"run id {self.run_id} is already taken by an earlier durable run; start "
                "the run with another run_id (or none: a new one is made)"
            )
            raise WorkflowRuntimeError(msg)

    def _fail(self, error: Exception) -> None:
        """The journal cannot go on: the run fails with ``error``; what is queued is dropped."""
        if self.failure is None:
            self.failure = error
            self._end_run(_outcome.failed("<journal>", error, None))
        self._drop_pending()
        self.inputs.stopped(error_text(error))
        self._open_gates(None)
        if not self._ended.done():
            self._ended.set_result(None)
        self._kick()  # a writer still waiting for entries raises it (DBOS: the run failed)

    def _cancelled_in_database(self) -> None:
        """DBOS has the run cancelled: end it so (nothing more can be recorded)."""
        if self.cancelled_in_db is None and self.failure is None:
            self.cancelled_in_db = _outcome.cancelled(
                f"durable run {self.run_id} was cancelled in its database (runtime.cancel() "
                "or DBOS.cancel_workflow, from this process or another)"
            )
            self._end_run(self.cancelled_in_db)
            self._kick()  # the writer stops

    def streamed(self, event: Event, seq: int) -> None:
        """``JournalStream.push``: queue the event; its step is named by :meth:`describe`."""
        entry = {"k": "ev", "seq": seq, "ev": self.serializer.serialize(event), "ns": 0}
        self._entries.append(entry)
        self._pending.append([event, seq, None, None, entry])
        self._kick()

    def describe(
        self, run: RunInfo, inv: StepInfo | None, event: Event, seq: int, written_ns: int | None
    ) -> None:
        """The run's ``event_streamed`` call right after the push: who wrote it, and when."""
        record = self._pending[-1] if self._pending else None
        if record is not None and record[1] == seq:
            record[2] = inv
            record[3] = written_ns
            entry = record[4]
            entry["ns"] = written_ns or time.time_ns()
            entry["step"] = inv.step if inv is not None else None

    def after_record(self, inv: StepInfo, call: Any, args: tuple[Any, ...]) -> None:
        """Call ``call(*args)`` once the next batch (which holds the step's end) is recorded.

        Called as a step ends: the run then checkpoints (or ends) at once, so a batch follows;
        after the run's end is recorded (a step that outlived its cancellation) at once.
        """
        if self._ended.done():
            call(*args)
        else:
            self._pending.append([None, call, inv, args, None])

    def after_events(self, inv: StepInfo, call: Any, args: tuple[Any, ...]) -> None:
        """Call ``call(*args)`` now, or after the unrecorded events ``inv`` wrote are published."""
        if any(record[2] is inv for record in self._pending):
            self._pending.append([None, call, inv, args, None])
        else:
            call(*args)

    def retrying(self, inv: StepInfo, delay: float, error: BaseException) -> None:
        """Attempt ``inv`` failed with ``error`` and is retried in ``delay`` s: record that."""
        if self._ended.done():
            return
        try:
            entry = retry_entry(inv, delay, error, self.serializer)
        except Exception:  # noqa: BLE001 - its event cannot be saved: the checkpoint says so
            return
        self._entries.append(entry)
        self._kick()

    def retried(self, step: str, invocation: int, event: Event) -> RetryState | None:
        """The retry state that invocation had before the restart (see ``Journal``)."""
        restored = self.restored_retries
        if not restored:
            return None
        return restored.take(step, invocation, event)

    def ready(self) -> asyncio.Future[None] | None:
        """None when all checkpoints queued so far are recorded; else a future for that.

        The runtime awaits it before each step invocation: a step whose successor ran is
        recorded, so it is never run again after a crash.
        """
        need = max(self._queued, 0)
        if self._recorded_upto >= need or self.failure is not None or self._aborted:
            return None
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates.append((need, gate))
        return gate

    def _open_gates(self, upto: int | None) -> None:
        """Let the invocations waiting for checkpoints up to ``upto`` go (None: all)."""
        if upto is not None:
            self._recorded_upto = upto
        waiting, self._gates = self._gates, []
        for need, gate in waiting:
            if upto is None or need <= upto:
                if not gate.done():
                    gate.set_result(None)
            else:
                self._gates.append((need, gate))

    def completed(self, run: Run, step: int, invocation: int) -> None:
        """A step completion was applied: save the run as it stands now."""
        self._done_keys.append(f"{run.router.graph.names[step]}:{invocation}")
        self._checkpoint(run)
        if self.idle is not None:
            self.idle.touch(run)

    def waiting(self, run: Run) -> None:
        """A step waits for an event: save the run, so its wait is restored after a crash."""
        self._checkpoint(run)
        if self.idle is not None:
            self.idle.touch(run)

    def received(self, run: Run, event: Event, target: str | None) -> None:
        """The caller sent ``event``: queue it for the next batch (see :mod:`._inputs`).

        A parked run's journal delivers it to the run wherever it is (see :mod:`._park`).
        """
        if self.parked and self.parking is not None:
            self.parking.deliver(self, event, target)
            return
        self._entries.append(self.inputs.entry(self.serializer, event, target))
        self._kick()
        if self.idle is not None:
            self.idle.touch(run)

    @property
    def aborted(self) -> bool:
        """Whether the run's task was cancelled before its end was recorded."""
        return self._aborted

    def take_inbox(self, entries: list[dict[str, Any]]) -> None:
        """Record the inbox events the run took (each with its ``inbox`` offset)."""
        for entry in entries:
            entry.pop("ack", None)
            self._entries.append(entry)
            self.inbox_taken = max(self.inbox_taken, entry["inbox"])
        if entries:
            self._kick()

    def park(self, run: Run) -> bool:
        """Queue the release's checkpoint and park entry; False if the run is ending."""
        if self._ended.done() or self.failure is not None or self._aborted:
            return False
        self._checkpoint(run)
        entry = {"k": "park", "attempt": self.info.attempt, "ns": time.time_ns()}
        self._entries.append(self.inputs.acked(entry))
        self._kick()
        return True

    async def recorded(self) -> None:
        """Return once the events the caller sent so far are recorded."""
        await self.inputs.wait()

    def cancelled(self) -> None:
        """A holder of the parked run's handler cancels it: reloaded, then cancelled."""
        if self.parking is not None:
            self.parking.cancel(self.run_id)

    def parked_outcome(self, run: Run) -> None:
        """The released run's task ended: end its steps' spans and its run span as parked."""
        if self.idle is not None:
            self.idle.cancel()
        self._drop_pending()
        self.observer.run_parked(self.info)

    def _checkpoint(self, run: Run) -> None:
        ctx = run.ctx
        # Once the outcome is decided, the end entry records the run: a checkpoint then
        # would restore a run that has ended, with the steps being stopped in flight.
        if ctx is None or self._ended.done() or run.router.state is not RunState.RUNNING:
            return
        try:
            payload = ctx._checkpoint(self.serializer)  # noqa: SLF001 - the journal is a friend
        except Exception as exc:  # noqa: BLE001 - the run fails with it, as a value
            msg = (
                f"durable run {self.run_id} could not be saved ({type(exc).__name__}: "
                f"{error_text(exc)}); what a durable run keeps in its store and the events it "
                "sends must be serializable by its serializer (JSON by default)"
            )
            error = WorkflowRuntimeError(msg)
            error.__cause__ = exc
            self._fail(error)
            return
        done, self._done_keys = self._done_keys, []
        entries = self._entries
        for i in range(len(entries) - 1, -1, -1):
            if entries[i]["k"] == "ck":  # superseded before it was written
                done = entries.pop(i)["done"] + done
                break
        entries.append({"k": "ck", "ctx": payload, "done": done, "ns": time.time_ns()})
        self._queued += 1
        self._kick()

    async def finish(self, run: Run, outcome: Outcome) -> Outcome:
        """Record how the run ended; return once that and all before it is recorded.

        Returns the outcome to publish: ``outcome``, or the journal's failure if it could
        not record the run (then nothing of the run is recorded as done).
        """
        if self.idle is not None:
            self.idle.cancel()
        if self.failure is None:
            self._done_keys.clear()
            self._entries.append(
                {
                    "k": "end",
                    "status": outcome.status,
                    "terminal": self.serializer.serialize(outcome.terminal),
                    "seq": self.stream.seq,
                    "ns": time.time_ns(),
                }
            )
            self._kick()
            await asyncio.shield(self._ended)
        if self._start_args is not None:  # DBOS records the run's end: wait for that too
            await asyncio.shield(self._recorded)
        if self.failure is not None:
            return _outcome.failed("<journal>", self.failure, None)
        return self.cancelled_in_db or outcome

    def abort(self) -> None:
        """The run's task was cancelled: write nothing more; the DBOS workflow stays pending."""
        self._aborted = True
        self._drop_pending()
        if not self.parked:  # a parked run's journal goes on taking the caller's events
            self.inputs.stopped("its task was cancelled")
        if self.idle is not None:
            self.idle.cancel()
        self._open_gates(None)
        self._kick()

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, []
        for event, call, _, args, _ in pending:
            if event is None:  # a step's end waiting for its events: end it without them
                call(*args)

    def closed(self, seq: int, terminal: StopEvent) -> None:
        """The stream's terminal event: the live readers end with it."""
        self.live = False
        self._terminal = (seq, terminal)
        for reader in self.readers:
            reader.feed(seq, terminal, True)

    # -- the writer (the body of the run's DBOS workflow) ----------------------------------

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _inbox_written(self, head: int | None) -> None:
        """Another process may have sent the run an event (its inbox's last offset)."""
        parking = self.parking
        if parking is not None and not self.parked and (head is None or head > self.inbox_taken):
            parking.spawn(parking.drain(self.run_id))

    async def write_loop(self) -> dict[str, Any]:
        """Commit the queued entries batch by batch until the end entry is recorded.

        Returns the end entry (the DBOS workflow's result). Raises CancelledError when
        the run was aborted: DBOS then leaves the workflow pending, to be resumed; and
        when the run was cancelled in the database (DBOS keeps it cancelled; the run
        ends so). A database error fails the run (and DBOS records the workflow as failed).
        """
        self.claimed = True
        if not self.begun.done():
            self.begun.set_result(None)
        self.writer = asyncio.current_task()
        self._open_gates(max(self._recorded_upto, 0))  # the run's DBOS workflow is recorded
        unwatch = watch_run(self.run_id, self._cancelled_in_database, self._inbox_written)
        try:
            end = await self._write_loop()
        except asyncio.CancelledError:
            if not self._ended.done():
                self._ended.cancel()
            if self.parked:
                RELEASING.set(True)
            raise
        except _dbos_io.CANCELLED:  # a write found the run cancelled before the watcher
            self._cancelled_in_database()
            end = None
        except Exception as exc:
            self._fail(exc)
            raise
        finally:
            unwatch()
        if end is not None:
            return end
        self._drop_pending()
        self._open_gates(None)
        if not self._ended.done():
            self._ended.set_result(None)
        raise asyncio.CancelledError  # DBOS records nothing (and logs nothing) then

    async def _write_loop(self) -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        while True:
            if not (self._entries or self._aborted or self.failure or self.cancelled_in_db):
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
            if self._aborted:
                raise asyncio.CancelledError
            if self.failure is not None:
                raise self.failure
            if self.cancelled_in_db is not None:
                return None
            batch, self._entries = self._entries, []
            pending, self._pending = self._pending, []
            queued = self._queued
            started = time.perf_counter()
            await _dbos_io.write_batch(batch)
            self.batches += 1
            self.inputs.committed(batch)
            self._open_gates(queued)
            self._publish(pending)
            self.observer.checkpoint_committed(self.info, time.perf_counter() - started)
            if batch[-1]["k"] == "end":
                self._ended.set_result(None)
                return batch[-1]

    def _publish(self, pending: list[list[Any]]) -> None:
        stream = self.stream
        observer = self.observer if self._observed else None
        readers = self.readers
        for event, seq, inv, written_ns, _ in pending:
            if event is None:  # a step's end, after its events (seq: the call, ns: its args)
                seq(*written_ns)
                continue
            stream.publish(event)
            if observer is not None:
                observer.event_streamed(self.info, inv, event, seq, written_ns)
            for reader in readers:
                reader.feed(seq, event, False)

    # -- reading back ----------------------------------------------------------------------

    async def history(self, after: int) -> AsyncIterator[tuple[int, Event, bool]]:
        """The recorded events with seq > ``after``, then the terminal one.

        The terminal one is the recorded end; or, for a run that ended here without
        recording it (cancelled in the database, a journal failure), the one it ended with.
        """
        where = f"the journal of run {self.run_id}"
        for batch in await _dbos_io.read_batches(self.run_id):
            for entry in batch:
                kind = entry["k"]
                if kind == "ev" and entry["seq"] > after:
                    yield entry["seq"], decode_event(self.serializer, entry["ev"], where), False
                elif kind == "end":
                    if entry["seq"] > after:
                        terminal = decode_event(self.serializer, entry["terminal"], where)
                        yield entry["seq"], terminal, True
                    return
        if self._terminal is not None and self._terminal[0] > after:
            yield self._terminal[0], self._terminal[1], True
