"""Open a report in headless Chromium and check it: the images loaded, nothing left the page,
the console stayed clean; take a screenshot.

Talks the Chrome DevTools protocol over ``--remote-debugging-pipe`` (JSON messages ending in a
NUL byte; Chromium reads commands on file descriptor 3 and writes replies and events on 4), so
it needs no network port and no Python package beyond the standard library. Used by the browser
test (``tests/report/test_browser.py``) and ``scripts/report_screenshot.py``.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> Optional[str]:
    """Path of a Chromium/Chrome executable (``$SATKERN_CHROMIUM`` first), or ``None``."""
    env = os.environ.get("SATKERN_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in CHROMIUM_NAMES:
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class PageCheck:
    """What the browser saw when it opened the page."""

    url: str
    images: List[dict] = field(default_factory=list)  # {"src": first 60 chars, "complete", "naturalWidth", "naturalHeight"}
    svgs: int = 0  # inline <svg> elements
    requests: List[str] = field(default_factory=list)  # every URL the page requested (the page itself included)
    console_errors: List[str] = field(default_factory=list)  # console.error, uncaught exceptions, log errors
    section_ids: List[str] = field(default_factory=list)
    table_rows: int = 0  # rows of the head table (tbody)
    script_results: list = field(default_factory=list)  # values of the ``scripts`` run after load
    screenshot_png: bytes = b""

    @property
    def outside_requests(self) -> List[str]:
        """Requests other than the page's own file and inline ``data:`` URLs."""
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    @property
    def broken_images(self) -> List[dict]:
        return [i for i in self.images if not i["complete"] or i["naturalWidth"] <= 0 or i["naturalHeight"] <= 0]


class _Pipe:
    """A minimal DevTools client over the two pipes."""

    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int):
        self.proc = proc
        self.write_fd = write_fd
        self.read_fd = read_fd
        self.next_id = 0
        self.replies: "queue.Queue[dict]" = queue.Queue()
        self.events: List[dict] = []
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw.decode("utf-8"))
                if "id" in msg:
                    self.replies.put(msg)
                else:
                    with self.lock:
                        self.events.append(msg)

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode("utf-8") + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium: no reply to {method} within {timeout:.0f} s")
            try:
                reply = self.replies.get(timeout=min(left, 1.0))
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"chromium exited (code {self.proc.returncode}) while waiting for {method}")
                continue
            if reply.get("id") != self.next_id:
                continue  # a late reply to an earlier command
            if "error" in reply:
                raise RuntimeError(f"chromium: {method} failed: {reply['error']}")
            return reply.get("result", {})

    def wait_event(self, method: str, session: Optional[str], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for e in self.events:
                    if e.get("method") == method and e.get("sessionId") == session:
                        return e
            time.sleep(0.05)
        raise TimeoutError(f"chromium: no {method} event within {timeout:.0f} s")

    def session_events(self, session: str) -> List[dict]:
        with self.lock:
            return [e for e in self.events if e.get("sessionId") == session]


_PAGE_PROBE = """(() => ({
  images: Array.from(document.images).map(i => ({src: i.src.slice(0, 60), complete: i.complete,
                                                  naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})),
  svgs: document.querySelectorAll('svg').length,
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  rows: document.querySelectorAll('table.heads tbody tr').length,
  height: Math.ceil(document.documentElement.scrollHeight),
}))()"""


def _new_session(cdp, width: int, height: int, timeout: float) -> str:
    """A blank tab attached in flat mode, with the Page, Runtime, Log and Network domains on and a
    ``width`` x ``height`` viewport; returns its session id."""
    target = cdp.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                    "mobile": False}, session=session)
    return session


def check_page(html_path, *, width: int = 1280, max_height: int = 16000, timeout: float = 90.0,
               chromium: Optional[str] = None, screenshot: bool = True, scripts: Sequence[str] = ()) -> PageCheck:
    """Open ``html_path`` (a file) in headless Chromium and report what it loaded.

    Host names resolve to nothing (``--host-resolver-rules``), so a page that tried the network
    would fail to load it -- and the attempt is still listed in ``requests``. The screenshot
    is of the whole page (``width`` CSS pixels wide, at most ``max_height`` tall). ``scripts``:
    JavaScript expressions evaluated in the page after it loaded, in order (``script_results``).
    """
    url = Path(html_path).resolve().as_uri()
    proc, cdp, profile, fds = _launch(chromium)
    try:
        session = _new_session(cdp, width, 900, timeout)
        cdp.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        cdp.wait_event("Page.loadEventFired", session, timeout)
        # wait until every image has decoded (data: URLs decode asynchronously after load)
        probe = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = cdp.send("Runtime.evaluate", {"expression": _PAGE_PROBE, "returnByValue": True},
                             session=session)["result"]["value"]
            if all(i["complete"] for i in probe["images"]):
                break
            time.sleep(0.2)
        check = PageCheck(url=url, images=probe["images"], svgs=probe["svgs"], section_ids=probe["sections"],
                          table_rows=probe["rows"])
        for expr in scripts:
            r = cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
            if "exceptionDetails" in r:
                raise RuntimeError(f"chromium: script failed: {r['exceptionDetails'].get('text')}: {expr[:80]}")
            check.script_results.append(r["result"].get("value"))
        if screenshot:
            height = max(300, min(int(probe["height"]), max_height))
            cdp.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
            shot = cdp.send("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)
            import base64

            check.screenshot_png = base64.b64decode(shot["data"])
        time.sleep(0.2)  # let late console events arrive
        check.requests, check.console_errors = _requests_and_errors(cdp.session_events(session))
        try:
            cdp.send("Browser.close", timeout=10)
        except Exception:
            pass
        return check
    finally:
        _close(proc, fds, profile)


def _launch(chromium: Optional[str] = None):
    """Start headless Chromium with the DevTools protocol on fds 3/4: ``(proc, pipe, profile, fds)``."""
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium executable found (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="satkern-chromium-")
    # fds 3 (commands to chromium) and 4 (replies from chromium), as --remote-debugging-pipe expects
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "about:blank"]

    def child_fds():  # in the child, before exec: move the pipe ends to fds 3 and 4
        import fcntl

        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)  # copies above 10 first: no clash with 3/4
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            pass_fds=(3, 4, to_child_r, from_child_w), preexec_fn=child_fds, close_fds=True)
    os.close(to_child_r)
    os.close(from_child_w)
    return proc, _Pipe(proc, to_child_w, from_child_r), profile, (to_child_w, from_child_r)


def _close(proc, fds, profile) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    shutil.rmtree(profile, ignore_errors=True)


def _requests_and_errors(events) -> tuple:
    """``(requested URLs, console errors)`` from a session's DevTools events."""
    requests, errors = [], []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return requests, errors


class Page:
    """A page open in headless Chromium, driven like a user: :func:`open_page` yields one.

    ``evaluate(expr)`` (the value; ``await_promise`` for a Promise), ``wait_for(expr)`` (until truthy),
    real input events in CSS pixels of the viewport (``move``, ``click``, ``key``), and what the page did
    so far (``requests()``, ``console_errors()``)."""

    def __init__(self, cdp: "_Pipe", session: str, url: str):
        self.cdp, self.session, self.url = cdp, session, url

    def evaluate(self, expr: str, await_promise: bool = False, timeout: float = 60.0):
        r = self.cdp.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": await_promise},
                          session=self.session, timeout=timeout)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise RuntimeError(f"chromium: script failed: {d.get('exception', {}).get('description') or d.get('text')}: "
                               f"{expr[:120]}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 30.0, poll: float = 0.05):
        deadline = time.monotonic() + timeout
        while True:
            v = self.evaluate(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                raise TimeoutError(f"chromium: {expr[:120]} still false after {timeout:.0f} s")
            time.sleep(poll)

    def _mouse(self, kind: str, x: float, y: float, **extra) -> None:
        self.cdp.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra}, session=self.session)

    def move(self, x: float, y: float) -> None:
        self._mouse("mouseMoved", x, y)

    def click(self, x: float, y: float) -> None:
        self._mouse("mouseMoved", x, y)
        self._mouse("mousePressed", x, y, button="left", clickCount=1)
        self._mouse("mouseReleased", x, y, button="left", clickCount=1)

    KEYS = {"ArrowRight": 39, "ArrowLeft": 37, "ArrowDown": 40, "ArrowUp": 38, "Escape": 27}

    def key(self, key: str) -> None:
        code = self.KEYS[key]
        for kind in ("rawKeyDown", "keyUp"):
            self.cdp.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key,
                                                     "windowsVirtualKeyCode": code}, session=self.session)

    def screenshot(self) -> bytes:
        import base64

        shot = self.cdp.send("Page.captureScreenshot", {"format": "png"}, session=self.session)
        return base64.b64decode(shot["data"])

    def requests(self) -> List[str]:
        return _requests_and_errors(self.cdp.session_events(self.session))[0]

    def outside_requests(self) -> List[str]:
        return [u for u in self.requests() if u != self.url and not u.startswith("data:")]

    def console_errors(self) -> List[str]:
        return _requests_and_errors(self.cdp.session_events(self.session))[1]


@contextmanager
def open_page(html_path, *, width: int = 1400, height: int = 1000, timeout: float = 90.0,
              chromium: Optional[str] = None):
    """Open ``html_path`` in headless Chromium (host names resolve to nothing, as in :func:`check_page`)
    and yield a :class:`Page` once its load event fired; Chromium is closed on exit."""
    url = Path(html_path).resolve().as_uri()
    proc, cdp, profile, fds = _launch(chromium)
    try:
        session = _new_session(cdp, width, height, timeout)
        cdp.send("Page.navigate", {"url": url}, session=session, timeout=timeout)
        cdp.wait_event("Page.loadEventFired", session, timeout)
        yield Page(cdp, session, url)
        try:
            cdp.send("Browser.close", timeout=10)
        except Exception:
            pass
    finally:
        _close(proc, fds, profile)
