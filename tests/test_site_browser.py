"""The built leaderboard site in a real headless Chromium, driven over the DevTools protocol.

Needs Debian's chromium (`apt-get install -y chromium`); skipped when it is absent. The
DevTools websocket is spoken with a ~40-line stdlib client so no extra package is needed.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from toy_plugin import toy_plugin, write_experiment  # noqa: E402,F401

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")


class DevTools:
    """Just enough of RFC 6455 for Chrome DevTools: masked text frames out, text frames in."""

    def __init__(self, ws_url: str, timeout: float = 30.0):
        u = urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n", 1)[0], head
        self.next_id = 0

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            buf += chunk
        return buf

    def _send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("DevTools closed the connection")
            if opcode in (0, 1, 2):
                message += payload
                if b0 & 0x80:
                    return message.decode()

    def call(self, method: str, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def board(tmp_path, toy_plugin):  # noqa: F811
    from subbench.cli import build_cli

    runner = CliRunner()
    exp = write_experiment(tmp_path)
    for args in (["run", str(exp), "--workdir", str(tmp_path / "wd"), "--out", str(tmp_path / "results"), "-q"],
                 ["leaderboard", "submit", str(tmp_path / "results"), "--board", str(tmp_path / "board")],
                 ["leaderboard", "build", "--board", str(tmp_path / "board")]):
        res = runner.invoke(build_cli(), args)
        assert res.exit_code == 0, res.output
    return tmp_path / "board"


@pytest.fixture
def served(board):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(board / "site"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    server.shutdown()
    server.server_close()


@pytest.fixture
def browser(tmp_path, served):
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--window-size=1400,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or proc.poll() is not None:
                pytest.fail("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = []
        while not targets and time.time() < deadline:
            targets = [t for t in json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
                       if t["type"] == "page"]
            time.sleep(0.1)
        dt = DevTools(targets[0]["webSocketDebuggerUrl"])
        dt.call("Page.enable")
        dt.call("Page.navigate", url=served)
        dt.js("""new Promise(r => { const ok = () => document.readyState === 'complete'
                 && Array.from(document.images).every(i => i.complete);
                 const t = () => ok() ? r(true) : setTimeout(t, 50); t(); })""")
        yield dt
        dt.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _ratios(dt: DevTools) -> list[str]:
    return dt.js("""(() => { const col = Array.from(document.querySelectorAll('#entries th'))
        .findIndex(th => th.textContent.startsWith('transfer ratio'));
        return Array.from(document.querySelectorAll('#entries tbody tr')).map(r => r.cells[col].getAttribute('data-sort')); })()""")


def test_site_loads_renders_and_sorts(browser, board, tmp_path):
    dt = browser
    assert dt.js("document.title") == "subbench leaderboard"
    rows = dt.js("document.querySelectorAll('#entries tbody tr').length")
    n_entries = len(list((board / "entries").rglob("*.json")))
    assert rows == n_entries == 9
    hashes = set(dt.js("Array.from(document.querySelectorAll('#entries tbody tr')).map(r => r.dataset.hash)"))
    on_board = {json.loads(p.read_text())["content_hash"] for p in (board / "entries").rglob("*.json")}
    assert hashes == on_board

    images = dt.js("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])")
    assert {src for src, _, _ in images} == {"heatmap.png", "strength-toy-a.png", "dose-0.png"}
    assert all(w > 100 and h > 100 for _, w, h in images), images
    # the dose-response figure says per relation why it has no fit (strength 0 gives null ratios: 2 strengths left)
    caption = dt.js("document.querySelector('figure.dose figcaption').innerText")
    assert "same-init: no fit (--fit needs at least 3 values" in caption, caption
    assert dt.js("document.querySelector('figure.dose').getBoundingClientRect().height") > 100
    resources = dt.js("performance.getEntriesByType('resource').map(r => r.name)")
    assert resources and all(r.startswith("http://127.0.0.1:") for r in resources), resources

    before = _ratios(dt)
    rect = dt.js("""(() => { const th = Array.from(document.querySelectorAll('#entries th'))
        .find(th => th.textContent.startsWith('transfer ratio')); const b = th.getBoundingClientRect();
        return [b.x + b.width / 2, b.y + b.height / 2]; })()""")
    dt.click(*rect)
    asc = _ratios(dt)
    numbers = [float(x) for x in asc if x != ""]
    assert asc != before
    assert numbers == sorted(numbers) and asc[-3:] == ["", "", ""]  # the three null ratios sort last
    dt.click(*rect)
    desc = _ratios(dt)
    assert [float(x) for x in desc if x != ""] == sorted(numbers, reverse=True)
    assert dt.js("document.querySelector('#entries th[aria-sort]').textContent") == "transfer ratio"

    shot = base64.b64decode(dt.call("Page.captureScreenshot", format="png")["data"])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    out = Path(os.environ.get("SUBBENCH_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.png").write_bytes(shot)
