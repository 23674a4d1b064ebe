"""The server's limits and options, in one place (``WorkflowServer(...)`` keywords)."""

from __future__ import annotations

from dataclasses import dataclass

from stepstream.errors import WorkflowValidationError

__all__ = ["TOKEN_ENV", "ServerSettings"]

#: The environment variable holding the bearer token when none is given.
TOKEN_ENV = "STEPSTREAM_SERVER_TOKEN"  # noqa: S105 - a variable's name, not a secret


@dataclass(frozen=True)
class ServerSettings:
    """Limits of one server. Times are seconds; ``None`` where allowed means no limit.

    Attributes:
        token: Bearer token every route but ``/health`` requires (None: no auth;
            ``stepstream serve`` reads ``--token`` or ``STEPSTREAM_SERVER_TOKEN``).
        cors_origins: Origins allowed by CORS (empty: CORS off, the default).
        max_body_bytes: Largest request body accepted (413 beyond it).
        body_timeout: Time allowed to receive a request body (408 beyond it).
        max_streams: Event streams open at once (503 beyond it).
        heartbeat: Seconds between ``: heartbeat`` comments on an idle SSE stream.
        send_timeout: A subscriber that does not take a frame within this is dropped.
        event_log_limit: Events of one run kept for subscribers (None: all of them).
        keep_finished: Finished handlers remembered (the oldest are forgotten first).
        header_timeout: Time allowed for a request's line and headers (slow clients
            are disconnected; ``serve()`` and ``stepstream serve`` only).
        keep_alive_timeout: Idle time before a kept-alive connection is closed.
        max_active_requests: Requests worked on at once; more wait their turn (none is
            refused), so a burst cannot hold the event loop. A ``/run`` request stops
            counting once its run has started, an event stream once it streams.
        loop_lag_probe: Sample the event loop's lag and serve it at
            ``GET /debug/loop-lag`` (``stepstream serve``: ``STEPSTREAM_LOOP_LAG=1``).
        idle_release_after: A durable server's runs waiting for events this long are
            released from memory (parked) until an event comes (None: never). Applies
            to the runtime the server makes (``durable=True`` or a URL).
    """

    token: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    body_timeout: float = 30.0
    max_streams: int = 1000
    heartbeat: float = 15.0
    send_timeout: float = 30.0
    event_log_limit: int | None = 10_000
    keep_finished: int = 1000
    header_timeout: float = 10.0
    keep_alive_timeout: float = 5.0
    max_active_requests: int = 16
    loop_lag_probe: bool = False
    idle_release_after: float | None = 60.0

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value!r} must be positive"
            for name, value in (
                ("max_body_bytes", self.max_body_bytes),
                ("body_timeout", self.body_timeout),
                ("max_streams", self.max_streams),
                ("heartbeat", self.heartbeat),
                ("send_timeout", self.send_timeout),
                ("event_log_limit", self.event_log_limit or 1),
                ("keep_finished", self.keep_finished),
                ("header_timeout", self.header_timeout),
                ("keep_alive_timeout", self.keep_alive_timeout),
                ("max_active_requests", self.max_active_requests),
                ("idle_release_after", self.idle_release_after or 1),
            )
            if not value > 0
        ]
        if self.token is not None and not self.token.strip():
            problems.append("token must not be empty (pass None for no auth)")
        if problems:
            msg = "WorkflowServer: " + "; ".join(problems)
            raise WorkflowValidationError(msg)
