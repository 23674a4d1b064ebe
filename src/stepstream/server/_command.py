"""``stepstream serve``: serve the workflows of a file or module over HTTP.

Imports only click at module level: the CLI registers this command without loading the
``server`` extra, and says how to install it when it is missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import click

from stepstream._visible import visible

__all__ = ["serve"]

TOKEN_ENV = "STEPSTREAM_SERVER_TOKEN"  # noqa: S105 - a variable's name, not a secret
LAG_ENV = "STEPSTREAM_LOOP_LAG"
#: What ``--durable`` alone stands for: the database in the telemetry directory.
DEFAULT_DATABASE = "default"
TUNE_ENV = "STEPSTREAM_SERVE_TUNE"
INSTANCE_ENV = "STEPSTREAM_INSTANCE_ID"


def _without_color(record: logging.LogRecord) -> bool:
    """Drop the ANSI-colored copy of the message that uvicorn adds to some of its records."""
    record.__dict__.pop("color_message", None)
    return True


def _fail(message: str) -> NoReturn:
    # Messages quote the user's names and errors: control characters are shown escaped.
    click.echo(f"error: {visible(message, multiline=True)}", err=True)
    sys.exit(2)


@click.command()
@click.argument("target", metavar="FILE.py|MODULE[:ATTR]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port (0: any free).")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    help=f"Bearer token required on every route but /health (or ${TOKEN_ENV}).",
)
@click.option("--cors-origin", "cors", multiple=True, help="An origin CORS allows (off if none).")
@click.option("--max-body", type=int, default=1_048_576, show_default=True, help="Bytes.")
@click.option("--max-streams", type=int, default=1000, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Processes (1 for now).")
@click.option(
    "--telemetry-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path(".stepstream"),
    show_default=True,
    help="Directory of the embedded trace and log files.",
)
@click.option(
    "--durable",
    "durable",
    is_flag=False,
    flag_value=DEFAULT_DATABASE,
    default=None,
    metavar="[DATABASE_URL]",
    is_eager=True,  # checked first: `--durable app.py` would take the file as the URL
    callback=lambda _ctx, _param, value: _checked_url(value),
    help=(
        "Run every workflow durably: runs survive a restart. The database is "
        "DIR/durable.sqlite of --telemetry-dir, or sqlite:///path or postgresql://... "
        "(write --durable=URL before FILE)."
    ),
)
@click.option(
    "--idle-release-after",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="With --durable: release runs waiting this long for an event (0: never).",
)
@click.option(
    "--instance-id",
    envvar=INSTANCE_ENV,
    default=None,
    metavar="ID",
    help=(
        "This replica's name, kept across restarts: its DBOS executor id (its runs resume "
        "where it restarts) and the service.instance.id of its telemetry. Default: "
        f"${INSTANCE_ENV}, else the host name. Give each replica on one database its own."
    ),
)
@click.option(
    "--failover-after",
    type=float,
    default=15.0,
    show_default=True,
    metavar="SECONDS",
    help=(
        "With --durable=postgresql://...: a replica whose lease is not renewed for this "
        "long has its runs taken over by another replica (0: never)."
    ),
)
@click.option(
    "--tune/--no-tune",
    envvar=TUNE_ENV,
    default=True,
    show_default=True,
    help=(
        "Once started, tune the process for serving: freeze start-up objects out of "
        "garbage collections, raise the collector's thresholds, a 1 ms GIL switch "
        f"interval (shorter, rarer loop stalls). --no-tune (or {TUNE_ENV}=0): Python's."
    ),
)
def serve(  # noqa: PLR0917 - click passes each option as an argument
    target: str,
    host: str,
    port: int,
    token: str | None,
    cors: tuple[str, ...],
    max_body: int,
    max_streams: int,
    workers: int,
    telemetry_dir: Path,
    durable: str | None,
    idle_release_after: float,
    instance_id: str | None,
    failover_after: float,
    tune: bool,
) -> None:
    """Serve every module-level Workflow instance of TARGET over HTTP (llama-agents' API)."""
    try:
        from stepstream.server import WorkflowServer, load_workflows  # noqa: PLC0415
    except ImportError as exc:
        _fail(
            f"stepstream serve needs the server extra ({exc.name} is missing): "
            "pip install 'stepstream[server]'"
        )
    from stepstream.errors import WorkflowError  # noqa: PLC0415
    from stepstream.server._lines import JsonLinesHandler  # noqa: PLC0415
    from stepstream.server._loop import ServingLoop  # noqa: PLC0415
    from stepstream.telemetry import configure_telemetry  # noqa: PLC0415

    if workers != 1:
        _fail(
            f"--workers {workers}: each worker would keep its own runs in memory, so a run "
            "started on one could not be streamed from another; run one process per port "
            "(behind a sticky load balancer) until a shared handler store exists"
        )
    database = _database(durable, telemetry_dir)
    replica = instance_id or _default_instance_id()
    try:
        workflows = load_workflows(target)
        runtime = _runtime(
            database, instance_id or None, replica, failover_after, idle_release_after
        )
        server = WorkflowServer(
            workflows,
            token=token or None,
            cors_origins=cors,
            max_body_bytes=max_body,
            max_streams=max_streams,
            loop_lag_probe=os.environ.get(LAG_ENV, "").strip().lower() in {"1", "true"},
            durable=runtime or database,
            idle_release_after=idle_release_after if idle_release_after > 0 else None,
        )
    except WorkflowError as exc:
        _fail(str(exc))
    lines = JsonLinesHandler(sys.stderr.buffer)
    server_log = logging.getLogger("stepstream.server")
    server_log.addHandler(lines)
    server_log.setLevel(logging.INFO)
    # uvicorn's own lines (start and stop, refused requests, an application's traceback)
    # as JSON lines too: a traceback's text is the application's, and a newline in it
    # would otherwise start what reads as a line of its own.
    uvicorn_log = logging.getLogger("uvicorn.error")
    uvicorn_log.addHandler(lines)
    uvicorn_log.addFilter(_without_color)
    uvicorn_log.setLevel(logging.INFO)
    uvicorn_log.propagate = False
    _tell_resource(replica)
    telemetry = configure_telemetry(service_name="stepstream-serve", directory=telemetry_dir)
    auth = "bearer token required" if token else "no auth"
    runs = f"; durable runs: {database}" if database else ""
    runs += f"; instance {replica}"
    banner = (
        f"serving {', '.join(workflows)} from {target} on http://{host}:{port} ({auth}); "
        f"telemetry: {telemetry.endpoint or telemetry.directory}{runs}"
    )
    click.echo(visible(banner), err=True)
    try:
        uv = server.uvicorn_server(host, port, tune_process=tune, log_config=None)
        try:
            _serve_until_stopped(uv, ServingLoop)
        except SystemExit:  # uvicorn's, when the start-up failed
            if server.startup_error is None:
                raise
        if server.startup_error is not None:  # uvicorn logged the traceback: say it plainly
            _fail(str(server.startup_error))
    finally:
        telemetry.shutdown()
        lines.close()


def _default_instance_id() -> str:
    import socket  # noqa: PLC0415

    return socket.gethostname() or "stepstream"


def _runtime(
    database: str | None,
    given: str | None,
    replica: str,
    failover_after: float,
    idle_release_after: float,
) -> Any:
    """The DBOSRuntime of a replica on Postgres (on SQLite only with an explicit id).

    None: the server makes its runtime from ``database`` (or serves in memory).
    """
    if database is None or (database.startswith("sqlite:") and given is None):
        return None
    try:
        from stepstream.durable import DBOSRuntime  # noqa: PLC0415
    except ImportError:
        return None  # the server says how to install the durable extra
    return DBOSRuntime(
        database,
        instance_id=replica,
        failover_after=failover_after if failover_after > 0 else None,
        idle_release_after=idle_release_after if idle_release_after > 0 else None,
    )


def _tell_resource(replica: str) -> None:
    """Add ``service.instance.id`` (this replica) to the telemetry's resource attributes."""
    given = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if "service.instance.id=" in given:
        return  # the deployment says it already
    pair = f"service.instance.id={quote(replica, safe='')}"
    os.environ["OTEL_RESOURCE_ATTRIBUTES"] = f"{given},{pair}" if given.strip() else pair


def _checked_url(durable: str | None) -> str | None:
    """``--durable``'s value, if it is a database URL (or none: the default database)."""
    if durable in {None, DEFAULT_DATABASE} or str(durable).startswith(
        ("sqlite:///", "postgresql://", "postgres://")
    ):
        return durable
    _fail(
        f"--durable {durable}: give a database URL (sqlite:///path or postgresql://...), "
        "or --durable alone for the default database; write --durable=URL before FILE"
    )


def _database(durable: str | None, telemetry_dir: Path) -> str | None:
    """The database URL of ``--durable`` (None without it)."""
    if durable == DEFAULT_DATABASE:
        return f"sqlite:///{(telemetry_dir / 'durable.sqlite').resolve()}"
    return durable


def _serve_until_stopped(uv: Any, loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """Run the uvicorn server ``uv`` until SIGINT or SIGTERM, then return normally.

    uvicorn shuts down gracefully on either signal and then raises it again for the
    handlers it found. Left to the defaults, SIGTERM (docker stop, systemd) would kill the
    process before the telemetry is flushed, and SIGINT would end in click's "Aborted!";
    the handlers here only ask uvicorn to stop (also when the signal comes before uvicorn
    installed its own). A second signal once uvicorn is done acts as usual.
    """

    def stop(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler's signature
        uv.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(uv.serve())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
