"""A real stepstream process for the Prometheus tests: runs the example workflows, serves /metrics.

The workflows of deploy/example_loop.py (the example programs plus failing, retried and
timed-out runs) are started again and again, each round a new batch next to the running
ones. Their metrics go through a MeterProvider with opentelemetry-exporter-prometheus's
PrometheusMetricReader, handed to every workflow as ``Workflow(meter_provider=...)``, and
are served by prometheus_client on 127.0.0.1:<port>/metrics for Prometheus to scrape.

usage: python tests/_metrics_app.py PORT [--interval S] [--seconds S]
Prints "serving" once the endpoint is up and "round N" after each finished round; stops
on SIGTERM, SIGINT or after --seconds.
"""

import argparse
import asyncio
import contextlib
import signal
import sys
from types import ModuleType

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from _helpers import ROOT
from _helpers import import_file

SERVICE_NAME = "stepstream-test"


def load_example_loop() -> ModuleType:
    """Import deploy/example_loop.py from its path."""
    return import_file(ROOT / "deploy" / "example_loop.py", "example_loop")


async def serve(provider: MeterProvider, interval: float, seconds: float) -> None:
    """Start a round every ``interval`` seconds (at most 8 running) until told to stop."""
    loop_module = load_example_loop()
    examples = loop_module.load_examples()
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    running.call_later(seconds, stop.set)
    tasks: set[asyncio.Task[object]] = set()
    rounds = 0

    def finished(task: asyncio.Task[object]) -> None:
        nonlocal rounds
        tasks.discard(task)
        if not task.cancelled() and task.exception() is None:
            rounds += 1
            sys.stdout.write(f"round {rounds}\n")
            sys.stdout.flush()

    while not stop.is_set():
        if len(tasks) < 8:
            task: asyncio.Task[object] = asyncio.create_task(
                loop_module.run_round(meter_provider=provider, examples=examples)
            )
            task.add_done_callback(finished)
            tasks.add(task)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> int:
    """Serve the metrics endpoint and run rounds."""
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=120.0)
    args = parser.parse_args()
    reader = PrometheusMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": SERVICE_NAME}), metric_readers=[reader]
    )
    server, thread = start_http_server(args.port, addr="127.0.0.1")
    sys.stdout.write("serving\n")
    sys.stdout.flush()
    try:
        asyncio.run(serve(provider, args.interval, args.seconds))
    finally:
        provider.shutdown()
        server.shutdown()
        thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
