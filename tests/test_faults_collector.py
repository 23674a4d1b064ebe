"""Collector faults: an OTLP endpoint that refuses, stalls, fails or drops never hurts a run.

configure_telemetry() sets process-global providers, so each scenario writes a script to
tmp_path and runs it in its own Python process, against a closed loopback port or a
small HTTP server running in a thread of the test process (127.0.0.1 only). The script
runs many small workflows while a ticker task measures how late the event loop wakes
up, flushes with ``await handle.aflush()``, shuts down, and prints one JSON line.
"""

import http.server
import json
import re
import socket
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from _helpers import run_command
from _helpers import without_otel

#: Message the rate-limit filter appends to the first SDK log record of each kind.
SUPPRESSION_NOTE = "[stepstream: repeats are suppressed"
#: Longest the event loop may be late while telemetry is active.
MAX_LOOP_LAG_S = 0.050
#: The script does its work this many times (see its main()).
ROUNDS = 2

SCRIPT = r'''
import asyncio
import json
import logging
import random
import sys
import time
from typing import Any

import stepstream
from stepstream import Context, Event, StartEvent, StopEvent, Workflow, step

RUNS = int(sys.argv[1])
CONCURRENCY = int(sys.argv[2])
EVENTS = int(sys.argv[3])
JITTER = float(sys.argv[4])
ROUNDS = 2

# The application's logging: each line names its logger, so repeats can be told apart.
logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")


class Tick(Event):
    i: int
    text: str


class Middle(Event):
    n: int


async def write_ticks(ctx: Context[Any], text: str) -> None:
    for i in range(EVENTS):
        ctx.write_event_to_stream(Tick(i=i, text=text))
        await asyncio.sleep(random.uniform(0, JITTER) if JITTER else 0)


class Small(Workflow):
    """Two steps; each writes EVENTS events to the stream."""

    @step
    async def first(self, ctx: Context[Any], ev: StartEvent) -> Middle:
        await write_ticks(ctx, "first")
        return Middle(n=ev.n)

    @step
    async def second(self, ctx: Context[Any], ev: Middle) -> StopEvent:
        await write_ticks(ctx, "second")
        return StopEvent(result=ev.n)


async def one(wf: Small, n: int, gate: asyncio.Semaphore) -> int:
    async with gate:
        handler = wf.run(n=n)
        count = 0
        async for _ in handler.stream_events():
            count += 1
        assert await handler == n, "wrong result"
        return count


async def main() -> dict[str, Any]:
    problems: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: problems.append(str(context)))
    handle = stepstream.configure_telemetry(service_name="collector-faults")
    wf = Small(timeout=60)
    # Warm-up: imports, first spans, first export attempt scheduled.
    await one(wf, -1, asyncio.Semaphore(1))
    lags: list[float] = []
    counts: list[int] = []
    flushed: list[bool] = []
    started = time.perf_counter()
    # The same work twice: a lag caused by telemetry shows in both rounds, while a
    # stall of this process by a busy machine rarely hits both.
    for _ in range(ROUNDS):
        lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal lag
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - before - 0.005)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        try:
            gate = asyncio.Semaphore(CONCURRENCY)
            counts += await asyncio.gather(*(one(wf, n, gate) for n in range(RUNS)))
            flushed.append(await handle.aflush(timeout=0.5))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            problems.append(f"raised into user code: {exc!r}")
        stop.set()
        await tick
        lags.append(lag)
    elapsed = time.perf_counter() - started
    before_shutdown = time.perf_counter()
    handle.shutdown(timeout=1.0)
    return {
        "runs": len(counts),
        "events": sum(counts),
        "lag_s": min(lags),
        "lags_s": lags,
        "elapsed_s": elapsed,
        "flushed": flushed,
        "shutdown_s": time.perf_counter() - before_shutdown,
        "problems": problems,
    }


print("RESULT " + json.dumps(asyncio.run(main())), flush=True)
'''


@dataclass(frozen=True)
class Outcome:
    """What a scenario script reported, and what the SDK logged on stderr."""

    result: dict[str, Any]
    stderr_lines: list[str]


def run_scenario(
    tmp_path: Path,
    endpoint: str | None,
    *,
    runs: int = 200,
    concurrency: int = 8,
    events: int = 3,
    jitter: float = 0.0,
    extra_env: dict[str, str] | None = None,
) -> Outcome:
    """Run the scenario script in a fresh interpreter and parse its result line."""
    script = tmp_path / "scenario.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = without_otel({"OTEL_EXPORTER_OTLP_TIMEOUT": "1"})
    if endpoint is not None:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint
    env.update(extra_env or {})
    sizes = (str(runs), str(concurrency), str(events), str(jitter))
    proc = run_command(sys.executable, script, *sizes, cwd=tmp_path, env=env)
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 1, proc.stdout
    return Outcome(json.loads(results[0].removeprefix("RESULT ")), proc.stderr.splitlines())


def assert_runs_unharmed(
    outcome: Outcome, runs: int, events_per_run: int, max_lag_s: float = MAX_LOOP_LAG_S
) -> None:
    """Every run completed, every event reached the stream, nothing raised, loop responsive."""
    result = outcome.result
    assert result["problems"] == [], result
    assert result["runs"] == ROUNDS * runs, result
    assert result["events"] == ROUNDS * runs * events_per_run, result
    assert result["lag_s"] < max_lag_s, f"event loop blocked: {result}"


def normalised(line: str) -> str:
    """Return ``line`` with numbers replaced, to compare messages that differ in counts."""
    return re.sub(r"\d+(\.\d+)?", "N", line)


def assert_logged_once(outcome: Outcome) -> list[str]:
    """Exporter errors appear, each kind once per logger with the rate-limit note.

    Returns the lines with the note. Each line starts with its logger's name.
    """
    lines = [line for line in outcome.stderr_lines if line.strip()]
    noted = [line for line in lines if SUPPRESSION_NOTE in line]
    assert noted, "no exporter error was logged:\n" + "\n".join(lines)
    repeated = {k: n for k, n in Counter(map(normalised, lines)).items() if n > 1}
    assert repeated == {}, "a message was logged more than once:\n" + "\n".join(lines)
    # A handful of distinct messages for hundreds of spans and thousands of log records.
    assert len(lines) <= 20, "\n".join(lines)
    return noted


# -- collectors -------------------------------------------------------------------------


def closed_port() -> int:
    """Return a loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _Server(http.server.ThreadingHTTPServer):
    # Handler threads are joined by server_close(): nothing outlives the collector.
    daemon_threads = False
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (the exporter timed out): expected here."""


class FakeCollector:
    """An OTLP/HTTP endpoint on 127.0.0.1, served by a thread, misbehaving as told.

    ``mode``: ``slow`` answers 200 after 3 s, ``500`` and ``429`` answer with that status,
    ``drop`` closes the connection without answering.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests: list[str] = []
        self.stop = threading.Event()
        self.server = _Server(("127.0.0.1", 0), self._handler_class())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"fake-collector-{mode}", daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        """Release waiting handlers, stop serving and join every thread."""
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def _handler_class(self) -> type[http.server.BaseHTTPRequestHandler]:
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10  # seconds a handler waits for a request's bytes

            def do_POST(self) -> None:
                """Answer an OTLP export request the way the collector's mode says."""
                collector.requests.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if collector.mode == "drop":
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                    elif collector.mode == "slow":
                        collector.stop.wait(3.0)
                        self._answer(200)
                    elif collector.mode == "500":
                        self._answer(500)
                    elif collector.mode == "429":
                        self._answer(429, retry_after="0")
                except OSError:
                    pass  # the exporter gave up waiting and closed the connection

            def _answer(self, code: int, retry_after: str | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Keep the test output quiet."""

        return Handler


@pytest.fixture
def collector(request: pytest.FixtureRequest) -> Iterator[FakeCollector]:
    """A fake collector misbehaving as ``request.param`` says, closed after the test."""
    fake = FakeCollector(request.param)
    try:
        yield fake
    finally:
        fake.close()


# -- tests --------------------------------------------------------------------------------

RUNS = 200
EVENTS_PER_RUN = 2 * 3 + 1  # two steps write three events each, then the StopEvent
OVERFLOW_RUNS = 500
OVERFLOW_EVENTS_PER_RUN = 2 * 2 + 1


def test_closed_port_endpoint_never_hurts_runs(tmp_path: Path) -> None:
    """With nothing listening at the endpoint, runs complete unharmed and errors are logged once."""
    outcome = run_scenario(tmp_path, f"http://127.0.0.1:{closed_port()}")
    assert_runs_unharmed(outcome, RUNS, EVENTS_PER_RUN)
    noted = assert_logged_once(outcome)
    assert any("Connection refused" in line for line in noted), noted


@pytest.mark.parametrize(
    "collector",
    [
        pytest.param("slow", id="slow-3s"),
        pytest.param("500", id="http-500"),
        pytest.param("429", id="http-429"),
        pytest.param("drop", id="drops-connection"),
    ],
    indirect=True,
)
def test_faulty_collector_never_hurts_runs(tmp_path: Path, collector: FakeCollector) -> None:
    """A slow, failing, throttling or hanging-up collector: runs unharmed, errors logged once."""
    outcome = run_scenario(tmp_path, collector.endpoint)
    assert_runs_unharmed(outcome, RUNS, EVENTS_PER_RUN)
    assert collector.requests, "the exporter never reached the fake collector"
    noted = assert_logged_once(outcome)
    assert any("Failed to export" in line for line in noted), noted
    if collector.mode == "slow":
        # aflush(timeout=0.5) gave up in time instead of waiting 3 s for the answer.
        assert outcome.result["flushed"] == [False] * ROUNDS
    # Shutdown is bounded by its timeout (1 s), not by the collector or the retries.
    assert outcome.result["shutdown_s"] < 2.0


@pytest.fixture(scope="module")
def overflow() -> Iterator[Outcome]:
    """Bursts of 500 concurrent runs against a span queue of 64, exported to a slow collector."""
    fake = FakeCollector("slow")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            yield run_scenario(
                Path(tmp),
                fake.endpoint,
                runs=OVERFLOW_RUNS,
                concurrency=OVERFLOW_RUNS,
                events=2,
                jitter=0.1,
                extra_env={
                    "OTEL_BSP_MAX_QUEUE_SIZE": "64",
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "32",
                },
            )
    finally:
        fake.close()


def test_span_queue_overflow_drops_without_blocking(overflow: Outcome) -> None:
    """A burst overflowing the span queue completes without waiting; the drop is logged once."""
    # Half a second: far less than one export attempt (1 s timeout) against a collector
    # that answers after 3 s, so the runs never waited for the exporter. (Without
    # telemetry the same burst already delays the loop by tens of milliseconds.)
    assert_runs_unharmed(overflow, OVERFLOW_RUNS, OVERFLOW_EVENTS_PER_RUN, max_lag_s=0.5)
    noted = assert_logged_once(overflow)
    assert [line for line in noted if "Queue full, dropping" in line], noted


def test_span_queue_drops_are_counted(overflow: Outcome) -> None:
    """The spans dropped by a full queue are counted, and the count is reported at shutdown."""
    report = [line for line in overflow.stderr_lines if "'Queue full, dropping %s.' was" in line]
    assert len(report) == 1, "no drop count reported:\n" + "\n".join(overflow.stderr_lines)
    assert int(re.findall(r"repeated (\d+) more times", report[0])[0]) > 0


def test_span_queue_smaller_than_default_batch_is_accepted(tmp_path: Path) -> None:
    """OTEL_BSP_MAX_QUEUE_SIZE below the SDK's default batch size (512) still configures."""
    outcome = run_scenario(
        tmp_path,
        f"http://127.0.0.1:{closed_port()}",
        runs=20,
        extra_env={"OTEL_BSP_MAX_QUEUE_SIZE": "64"},
    )
    assert_runs_unharmed(outcome, 20, EVENTS_PER_RUN)
