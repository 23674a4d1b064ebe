"""Headless Chromium driven through chromedriver's W3C WebDriver API (plain HTTP, via httpx).

Chromium and chromedriver come from Debian (``.ci/run`` installs them). Chromium runs
with its own networking limited to 127.0.0.1 (every other host resolves to nothing) and
a fresh profile; the browser's console is read through chromedriver's log endpoint.
Each fixture stops exactly the chromedriver process it started.
"""

import base64
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class WebDriverError(AssertionError):
    """chromedriver answered a command with an error."""


class Browser:
    """One WebDriver session: navigate, run scripts, find, click, type, screenshot, logs."""

    def __init__(self, http: httpx.Client, session: str) -> None:
        self._http = http
        self._base = f"/session/{session}"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self._http.request(method, self._base + path, json=body)
        value = response.json().get("value")
        if response.status_code != 200:
            msg = f"{method} {path}: {value}"
            raise WebDriverError(msg)
        return value

    def get(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        self._call("POST", "/url", {"url": url})

    def refresh(self) -> None:
        """Reload the page."""
        self._call("POST", "/refresh", {})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) and return its value."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(self, script: str, *args: Any, timeout: float = 20) -> Any:
        """Run ``script`` until it returns something truthy, and return that."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.execute(script, *args)
            if value:
                return value
            time.sleep(0.05)
        msg = f"not true within {timeout} s: {script} (last: {value!r})"
        raise AssertionError(msg)

    def element(self, css: str) -> str:
        """The reference of the first element matching ``css``."""
        found = self._call("POST", "/element", {"using": "css selector", "value": css})
        reference: str = found[_ELEMENT]
        return reference

    def click(self, css: str) -> None:
        """Click the first element matching ``css``."""
        self._call("POST", f"/element/{self.element(css)}/click", {})

    def type(self, css: str, text: str) -> None:
        """Type ``text`` into the first element matching ``css``."""
        self._call("POST", f"/element/{self.element(css)}/value", {"text": text})

    def screenshot(self) -> bytes:
        """A PNG of the viewport."""
        return base64.b64decode(self._call("GET", "/screenshot"))

    def console(self) -> list[dict[str, Any]]:
        """The browser's console entries since the last call (level, message)."""
        entries: list[dict[str, Any]] = self._call("POST", "/se/log", {"type": "browser"})
        return entries


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def browser(profile: Path, width: int = 1400, height: int = 1000) -> Iterator[Browser]:
    """A headless Chromium session under a chromedriver this fixture starts and stops."""
    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    port = _free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}", "--allowed-ips=127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            deadline = time.monotonic() + 20
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/status").json()["value"]["ready"]:
                        break
                assert time.monotonic() < deadline, "chromedriver did not start within 20 s"
                time.sleep(0.05)
            options = {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-extensions",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    f"--user-data-dir={profile}",
                    f"--window-size={width},{height}",
                    "--hide-scrollbars",
                ],
            }
            capabilities = {
                "browserName": "chrome",
                "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL"},
            }
            started = http.post("/session", json={"capabilities": {"alwaysMatch": capabilities}})
            assert started.status_code == 200, started.text
            session: str = started.json()["value"]["sessionId"]
            try:
                yield Browser(http, session)
            finally:
                http.delete(f"/session/{session}")
    finally:
        driver.terminate()
        try:
            driver.wait(timeout=10)
        except subprocess.TimeoutExpired:
            driver.kill()
            driver.wait(timeout=5)
