"""The ``stepstream serve`` process itself: how it stops, and what it writes on stderr."""

import json
import signal
from pathlib import Path

import httpx
import pytest

from _live_server import serve_process


def spans_of_run(traces: Path, run_id: str) -> list[str]:
    """Names of the spans of run ``run_id`` in an embedded ``traces.jsonl`` (OTLP/JSON)."""
    names = []
    for line in traces.read_text(encoding="utf-8").splitlines():
        for resource in json.loads(line)["resourceSpans"]:
            for scope in resource["scopeSpans"]:
                for span in scope["spans"]:
                    keys = {a["key"]: a["value"] for a in span["attributes"]}
                    if keys.get("stepstream.run_id") == {"stringValue": run_id}:
                        names.append(span["name"])
    return names


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_server_flushes_its_telemetry_and_exits_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """SIGTERM (docker stop, systemd, Kubernetes) or Ctrl-C: the runs' spans reach the store,
    the process exits 0 after its graceful shutdown, with no "Aborted!" on stderr."""
    telemetry = tmp_path / "telemetry"
    with serve_process("--telemetry-dir", str(telemetry), cwd=tmp_path) as server:
        start = {"start_event": {"greeting": "hi", "name": "Ada"}}
        response = httpx.post(f"{server.url}/workflows/greeting/run", json=start, timeout=20)
        assert response.status_code == 200, response.text
        code = server.stop(sig)
    lines = list(server.lines)
    assert code == 0, lines
    assert not any("Aborted" in line for line in lines), lines
    names = spans_of_run(telemetry / "traces.jsonl", response.json()["run_id"])
    assert sorted(names) == [
        "invoke_workflow GreetingWorkflow",
        "run_step first_step",
        "run_step second_step",
    ]
