"""Load a page in headless Chromium and read what a user's browser would show.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: fd 3
carries commands to the browser, fd 4 its answers and events, each message JSON ended by a NUL
byte), so no port, no websocket library and no log scraping: console errors, uncaught exceptions
and every request the page makes arrive as typed events. Protocol reference:
https://chromedevtools.github.io/devtools-protocol/ (Target, Page, Runtime, Log, Network).
"""

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WINDOW = "1280,1600"


def chromium() -> str | None:
    """The Chromium binary (Debian package chromium), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Loaded:
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    load_ms: float = 0.0  # navigation start to the end of the load event (Navigation Timing)
    values: dict[str, Any] = field(default_factory=dict)  # the expressions, evaluated after load


class _Pipe:
    """One DevTools session over the browser's pipe."""

    def __init__(self, send: int, receive: int, timeout: float) -> None:
        self._send, self._receive = send, receive
        self._deadline = time.monotonic() + timeout
        self._buffer = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, params: Mapping[str, Any] | None = None, session: str = "") -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": dict(params or {})}
        if session:
            message["sessionId"] = session
        os.write(self._send, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._next()
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._next()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _next(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = self._deadline - time.monotonic()
            if left <= 0 or not select.select([self._receive], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._receive, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed its DevTools pipe")
            self._buffer += chunk
        message, _nul, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            found.append(params["entry"]["text"])
    return found


def load(
    path: str,
    expressions: Mapping[str, str],
    screenshot: str | None = None,
    timeout: float = 60.0,
) -> Loaded:
    """Open ``path`` (a local file) in a fresh headless Chromium, wait for its load event,
    evaluate each expression, and optionally save a PNG screenshot."""
    binary = chromium()
    assert binary, "chromium is not installed"
    to_browser, browser_in = os.pipe()
    browser_out, from_browser = os.pipe()
    profile = tempfile.mkdtemp(prefix="omnibio-chromium-")
    argv = [binary, "--headless", "--disable-gpu", "--no-first-run", "--remote-debugging-pipe"]
    # a container's /dev/shm is often 64 MB, too small for the renderer: use /tmp instead
    argv += ["--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={WINDOW}"]
    argv.append("about:blank")
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root inside its sandbox

    def pipes() -> None:  # in the child: the browser reads fd 3 and writes fd 4
        reads, writes = os.dup(to_browser), os.dup(from_browser)  # neither is 3 or 4 now
        os.dup2(reads, 3)
        os.dup2(writes, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    browser = subprocess.Popen(
        argv,
        pass_fds=(3, 4),  # kept open when the child closes the rest, after pipes()
        preexec_fn=pipes,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(to_browser)
    os.close(from_browser)
    pipe = _Pipe(browser_in, browser_out, timeout)
    try:
        target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            pipe.call(f"{domain}.enable", session=session)
        pipe.events.clear()
        pipe.call("Page.navigate", {"url": "file://" + os.path.abspath(path)}, session=session)
        pipe.wait_for("Page.loadEventFired")
        loaded = Loaded()
        for name, expression in expressions.items():
            answer = pipe.call(
                "Runtime.evaluate", {"expression": expression, "returnByValue": True}, session
            )
            if "exceptionDetails" in answer:
                raise RuntimeError(f"{name}: {answer['exceptionDetails']['text']}")
            loaded.values[name] = answer["result"].get("value")
        timing = pipe.call(
            "Runtime.evaluate",
            {
                "expression": "performance.getEntriesByType('navigation')[0].loadEventEnd",
                "returnByValue": True,
            },
            session,
        )
        loaded.load_ms = float(timing["result"]["value"])
        if screenshot:
            shot = pipe.call("Page.captureScreenshot", {"format": "png"}, session)
            with open(screenshot, "wb") as outfile:
                outfile.write(base64.b64decode(shot["data"]))
        loaded.errors = _errors(pipe.events)
        loaded.requests = [
            e["params"]["request"]["url"]
            for e in pipe.events
            if e.get("method") == "Network.requestWillBeSent"
        ]
        pipe.call("Browser.close")
        browser.wait(timeout=30)
        return loaded
    finally:
        if browser.poll() is None:
            browser.kill()
            browser.wait()
        os.close(browser_in)
        os.close(browser_out)
        shutil.rmtree(profile, ignore_errors=True)
