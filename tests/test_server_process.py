"""The ``stepstream serve`` process itself: how it stops, and what it writes on stderr."""

import json
import logging
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from _live_server import serve_process
from stepstream.server._lines import json_line


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


# A handler id / workflow name in the URL: a newline and a forged JSON line, a carriage
# return, an ANSI escape, U+2028, a NUL, and %ED%A0%80 (the UTF-8 form of the lone
# surrogate U+D800, which no decoder accepts).
HOSTILE = (
    "a%0A%7B%22level%22%3A%22error%22%2C%22event%22%3A%22forged%22%7D"
    "%0D%1B%5B31m%E2%80%A8%00%ED%A0%80"
)
HOSTILE_REQUESTS = [
    ("GET", f"/handlers/{HOSTILE}"),
    ("GET", f"/handlers/{HOSTILE}/steps"),
    ("POST", f"/handlers/{HOSTILE}/cancel"),
    ("GET", f"/events/{HOSTILE}"),
    ("POST", f"/events/{HOSTILE}"),
    ("GET", f"/results/{HOSTILE}"),
    ("POST", f"/workflows/{HOSTILE}/run"),
    ("POST", f"/workflows/{HOSTILE}/run-nowait"),
    ("GET", f"/workflows/{HOSTILE}/schema"),
]
LOGGERS = {"stepstream.server", "uvicorn.error"}


def raw_request(url: str, target: bytes) -> bytes:
    """Send one request line with ``target`` as is (no percent-encoding); the reply's bytes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def assert_json_log(lines: list[str]) -> list[dict[str, object]]:
    """Past the banner, every stderr line is one JSON object of a known logger; return them."""
    assert lines, "no output"
    assert lines[0].startswith("serving hostile from "), lines[0]
    records = []
    for line in lines[1:]:
        assert line.splitlines() == [line.removesuffix("\n")], line  # nor U+2028 in it
        record = json.loads(line)  # one object per line: nothing spilled onto another
        assert isinstance(record, dict), line
        assert record["logger"] in LOGGERS, line
        assert record["event"] != "forged", line
        records.append(record)
    return records


def test_hostile_names_get_a_clean_4xx_and_one_json_log_line_each(tmp_path: Path) -> None:
    """Control characters, a forged line and undecodable bytes in a handler id or workflow
    name of the URL get 404 (or 400 unencoded); a workflow whose name and error carry them
    fails cleanly; the server's stderr stays one JSON object per line throughout."""
    app = Path(__file__).resolve().parent / "_hostile_served_app.py"
    with (
        serve_process(target=app, cwd=tmp_path) as server,
        httpx.Client(base_url=server.url, timeout=20) as http,
    ):
        for method, path in HOSTILE_REQUESTS:
            response = http.request(method, path, json={})
            assert response.status_code == 404, (method, path, response.text)
            detail = response.json()["detail"]
            assert "not found" in detail.lower(), (path, detail)
            assert not any(c in detail for c in "\n\r\x1b\x00\u2028"), (path, detail)
        for target in (b"/handlers/a\x1bb", b"/handlers/a\xed\xa0\x80", b"/events/a\x00"):
            assert raw_request(server.url, target).startswith(b"HTTP/1.1 400 "), target

        failed = http.post("/workflows/hostile/run", json={})
        assert failed.status_code == 500, failed.text  # the peer's status of a failed run
        body = failed.json()
        assert body["status"] == "failed"
        assert body["error"].startswith("OSError: cannot read caf\\udce9.txt\n"), body
        listed = http.get("/handlers").json()["handlers"]
        assert [h["error"] for h in listed] == [body["error"]]
        assert http.get(f"/handlers/{body['handler_id']}").json() == body
        assert server.stop(signal.SIGTERM) == 0
    records = assert_json_log(list(server.lines))
    (finished,) = [r for r in records if r["event"] == "run_finished"]
    assert finished["error"] == body["error"]
    assert str(finished["workflow"]).startswith("Hostile\n")


def fail_with(message: str) -> None:
    raise OSError(message)


def test_a_json_log_line_takes_any_text() -> None:
    """The formatter of ``stepstream serve``'s lines: a lone surrogate, newlines and escapes
    in an extra field or an exception's message give one encodable JSON line."""
    text = 'caf\udce9\n{"event": "forged"}\r\x1b[31m\u2028'
    try:
        fail_with(text)
    except OSError:
        record = logging.getLogger("stepstream.server").makeRecord(
            "stepstream.server", logging.ERROR, __file__, 1, "internal_error", (), sys.exc_info()
        )
    record.path = text
    raw = json_line(record)
    assert raw.endswith(b"\n")
    line = raw[:-1].decode("ascii")  # what goes to stderr: ASCII, user text escaped
    assert line.splitlines() == [line]  # no \n, \r, U+2028 or other break a reader splits at
    parsed = json.loads(line)
    assert parsed["event"] == "internal_error"
    assert parsed["path"] == text
    assert parsed["exception"].endswith(f"OSError: {text}")
