"""A real headless Chromium, driven over the Chrome DevTools Protocol with `websockets`.

Why not Selenium: it would add selenium (and trio, urllib3, websocket-client…) to the dev
dependencies plus Debian's chromium-driver, for the handful of calls these tests make.
CDP is Chromium's own protocol, the `websockets` package is already a dev dependency, and
nothing is downloaded at run time: the browser is Debian's `chromium` (`make browser`).

Input goes through `Input.*` (real key and mouse events), not by setting values from
script, so the page's own event handlers run as they would for a person.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-default-browser-check", "--hide-scrollbars",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]
START_TIMEOUT_S = 30.0


class BrowserError(AssertionError):
    """A CDP command failed, or the page threw: the test fails with the browser's words."""


class Page:
    """One tab. Every call blocks until Chromium answers."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self.errors: list[str] = []  # uncaught exceptions and console.error, in order
        self.send("Runtime.enable")
        self.send("Page.enable")

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=30))
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})  # type: ignore[no-any-return]
            self._note_event(message)

    def _note_event(self, message: dict[str, Any]) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description")
                               or details.get("text", "exception"))
        elif message.get("method") == "Runtime.consoleAPICalled" and params["type"] == "error":
            self.errors.append(" ".join(str(arg.get("value", arg.get("description", "")))
                                        for arg in params["args"]))

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, *, timeout_s: float = 15.0, what: str = "") -> Any:
        """Evaluate `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout_s
        # A DOM node comes back by value as {}, which Python reads as false.
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while True:
            value = self.evaluate(probe)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout_s}s waiting for "
                                   f"{what or expression}; page errors: {self.errors}")
            time.sleep(0.1)

    def type(self, selector: str, text: str) -> None:
        self.click(selector)
        self.send("Input.insertText", text=text)

    def click(self, selector: str) -> None:
        box = self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e || e.offsetParent === null) return null;"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()",
            what=f"{selector} to be visible")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                      button="left", clickCount=1)

    def text(self, selector: str) -> str:
        return str(self.evaluate(
            f"document.querySelector({json.dumps(selector)})?.innerText ?? ''"))

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))
        return path


class Browser:
    """Starts Chromium with a throwaway profile; `page` is its first tab."""

    def __init__(self, *, width: int = 1400, height: int = 1000) -> None:
        if not Path(CHROMIUM).exists():
            raise BrowserError(f"{CHROMIUM} is missing: `make browser` installs Debian's "
                               "chromium (or set CHROMIUM_BIN)")
        self._exit = contextlib.ExitStack()
        self._profile = Path(tempfile.mkdtemp(prefix="sy-chromium-"))
        self._log = (self._profile / "chromium.log").open("wb")
        self._process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self._profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            # Entered as a context manager: websockets >= 17.1 warns on a bare connect().
            self._ws = self._exit.enter_context(
                connect(self._page_websocket(), max_size=None, open_timeout=10))
            self.page = Page(self._ws)
        except BaseException:
            self.close()
            raise

    def _page_websocket(self) -> str:
        # Chromium writes the port it picked (we asked for 0) to DevToolsActivePort.
        port_file = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}: "
                                   f"{self.log_tail()}")
            if port_file.exists() and (lines := port_file.read_text().split()):
                targets = httpx.get(f"http://127.0.0.1:{lines[0]}/json/list").json()
                pages = [t for t in targets if t["type"] == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise BrowserError(f"no DevTools page after {START_TIMEOUT_S}s: "
                                   f"{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        self._log.flush()
        return (self._profile / "chromium.log").read_text(errors="replace")[-2000:]

    def close(self) -> None:
        self._exit.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
