"""Trace context: the caller's traceparent → the HTTP server span → the run span → its steps."""

import logging

import httpx
import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from opentelemetry.trace import SpanKind
from opentelemetry.trace import StatusCode

from _helpers import parent_id
from _helpers import span_id
from _helpers import trace_id
from _live_server import serve_in_thread
from _served_app import CrashingWorkflow
from _served_app import GreetingWorkflow
from stepstream.server import WorkflowServer
from stepstream.testing import CapturedTelemetry

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


@pytest.mark.asyncio
async def test_one_trace_from_the_request_to_the_last_step(
    sdk: CapturedTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """The request span is the traceparent's child, the run span the request span's child,
    every step in the same trace; the response and the server's log lines carry the trace."""
    caplog.set_level(logging.INFO, logger="stepstream.server")
    workflow = GreetingWorkflow(timeout=20, tracer_provider=sdk.tracer_provider)
    server = WorkflowServer({"greeting": workflow}, tracer_provider=sdk.tracer_provider)
    with serve_in_thread(server) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            response = await http.post(
                "/workflows/greeting/run",
                json={"start_event": {"greeting": "hi", "name": "Ada"}},
                headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            )
    assert response.status_code == 200
    assert response.json()["trace_id"] == CALLER_TRACE
    assert response.headers["traceresponse"].startswith(f"00-{CALLER_TRACE}-")

    (request,) = sdk.named("POST /workflows/{name}/run")
    (run,) = sdk.named("invoke_workflow GreetingWorkflow")
    steps = sdk.named("run_step first_step") + sdk.named("run_step second_step")
    assert request.kind is SpanKind.SERVER
    assert request.attributes is not None
    assert request.attributes["http.route"] == "/workflows/{name}/run"
    assert format(trace_id(request), "032x") == CALLER_TRACE
    assert format(parent_id(request) or 0, "016x") == CALLER_SPAN
    assert parent_id(run) == span_id(request)
    assert len(steps) == 2
    assert {trace_id(s) for s in [request, run, *steps]} == {trace_id(request)}
    assert all(parent_id(s) == span_id(run) for s in steps)
    assert response.headers["traceresponse"] == f"00-{CALLER_TRACE}-{span_id(request):016x}-01"

    lines = {r.getMessage(): r for r in caplog.records if r.name == "stepstream.server"}
    for message in ("run_started", "run_finished", "http_request"):
        assert getattr(lines[message], "trace_id", None) == CALLER_TRACE, message
    started = lines["run_started"]
    assert getattr(started, "run_id", None) == response.json()["run_id"]
    assert getattr(started, "workflow", None) == "GreetingWorkflow"
    assert getattr(started, "workflow_name", None) == "greeting"


@pytest.mark.asyncio
async def test_span_names_do_not_carry_ids(sdk: CapturedTelemetry) -> None:
    """Request spans are named by route template, so handler ids never make new span names."""
    workflow = GreetingWorkflow(timeout=20, tracer_provider=sdk.tracer_provider)
    server = WorkflowServer({"greeting": workflow}, tracer_provider=sdk.tracer_provider)
    with serve_in_thread(server) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            for _ in range(3):
                start = {"start_event": {"greeting": "a", "name": "b"}}
                run = await http.post("/workflows/greeting/run", json=start)
                hid = run.json()["handler_id"]
                await http.get(f"/handlers/{hid}")
                await http.get(f"/events/{hid}", params={"after_sequence": -1})
    names = {s.name for s in sdk.spans if s.kind is SpanKind.SERVER}
    assert names == {
        "POST /workflows/{name}/run",
        "GET /handlers/{handler_id}",
        "GET /events/{handler_id}",
    }


@pytest.mark.asyncio
async def test_request_spans_carry_the_status_and_requests_are_timed(
    sdk: CapturedTelemetry,
) -> None:
    """Each request span has the HTTP attributes and response status; a 404 leaves the
    span's status unset (a client error), a 500 sets it to ERROR, and
    http.server.request.duration counts every request by method, route and status."""
    workflow = GreetingWorkflow(timeout=20, tracer_provider=sdk.tracer_provider)
    server = WorkflowServer(
        {"greeting": workflow, "crashing": CrashingWorkflow(timeout=20)},
        tracer_provider=sdk.tracer_provider,
        meter_provider=sdk.meter_provider,
    )
    with serve_in_thread(server) as base:
        async with httpx.AsyncClient(base_url=base, timeout=20) as http:
            start = {"start_event": {"greeting": "a", "name": "b"}}
            assert (await http.post("/workflows/greeting/run", json=start)).status_code == 200
            assert (await http.get("/handlers/nope")).status_code == 404
            failed = await http.post("/workflows/crashing/run", json={})
    ran, crashed = sdk.named("POST /workflows/{name}/run")
    (missing,) = sdk.named("GET /handlers/{handler_id}")
    assert ran.attributes is not None
    assert dict(ran.attributes) == {
        "http.request.method": "POST",
        "url.scheme": "http",
        "url.path": "/workflows/greeting/run",
        "network.protocol.version": "1.1",
        "http.route": "/workflows/{name}/run",
        "client.address": "127.0.0.1",
        "http.response.status_code": 200,
    }
    assert missing.attributes is not None
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.status.status_code is StatusCode.UNSET
    assert crashed.attributes is not None
    assert crashed.attributes["http.response.status_code"] == failed.status_code == 500
    assert crashed.attributes["error.type"] == "500"
    assert crashed.status.status_code is StatusCode.ERROR
    (duration,) = [m for m in sdk.metrics().values() if m.name == "http.server.request.duration"]
    points = [p for p in duration.data.data_points if isinstance(p, HistogramDataPoint)]
    counted = {
        (p.attributes["http.route"], p.attributes["http.response.status_code"]): p.count
        for p in points
        if p.attributes is not None
    }
    assert counted == {
        ("/workflows/{name}/run", 200): 1,
        ("/workflows/{name}/run", 500): 1,
        ("/handlers/{handler_id}", 404): 1,
    }
