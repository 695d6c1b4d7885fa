"""A real OpenAI-compatible server for the endpoint tests, and a loopback proxy that injects faults.

``transformers serve`` serves a tiny model built locally (H1's ``tiny-llama`` with a few
pretraining steps: its verdicts are noise, which is what the parse-failure accounting is
for). The proxy sits between client and server, counts what reaches the server, and answers
chosen requests itself with 429 + Retry-After, 500, a 401 that echoes the credentials, or a
stall longer than the client's time-out.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_tiny_model(out: Path, steps: int = 20) -> Path:
    """H1's tiny-llama, briefly pretrained, with sampling on by default (the server only turns it off)."""
    from subbench import plugins
    from subbench.context import Context

    out = Path(out)
    if not (out / "config.json").exists():
        ctx = Context(workdir=out.parent / "wd", quiet=True)
        plugins.get("families", "tiny-llama").build(0, {"steps": steps}, out, ctx)
        gen_path = out / "generation_config.json"
        gen = json.loads(gen_path.read_text())
        gen.update(do_sample=True, top_k=0)
        gen_path.write_text(json.dumps(gen, indent=2))
    return out


@contextlib.contextmanager
def serve(model_dir: Path, log: Path, timeout: float = 120.0):
    """``transformers serve`` on 127.0.0.1 at a free port; yields its /v1 base URL."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    exe = Path(sys.executable).with_name("transformers")
    cmd = [str(exe) if exe.exists() else "transformers", "serve", str(model_dir), "--device", "cpu",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--default-seed", "0"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}: {Path(log).read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"transformers serve did not come up in {timeout:.0f} s")
            time.sleep(0.5)
        yield base + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class FaultProxy:
    """Forwards to ``upstream``; ``plan`` pops one action per request: None/'pass', '429', '500', 'stall', '401-echo'."""

    def __init__(self, upstream: str, retry_after: float = 1.0, stall: float = 3.0):
        self.upstream = upstream.split("/v1")[0]
        self.retry_after = retry_after
        self.stall = stall
        self.plan: list[str] = []
        self.policy: Callable[[dict[str, Any]], str | None] | None = None
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self._handle(b"")

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                self._handle(self.rfile.read(length))

            def _handle(self, body: bytes):
                try:
                    payload = json.loads(body) if body else None
                except ValueError:
                    payload = None
                entry = {"t": time.monotonic(), "path": self.path, "body": payload,
                         "authorization": self.headers.get("authorization"), "action": "pass", "status": None}
                with proxy.lock:
                    action = proxy.plan.pop(0) if proxy.plan else None
                    if action is None and proxy.policy is not None:
                        action = proxy.policy(entry)
                    entry["action"] = action or "pass"
                    proxy.log.append(entry)
                try:
                    if entry["action"] == "429":
                        self._reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": f"{proxy.retry_after:g}"})
                    elif entry["action"] == "500":
                        self._reply(500, {"error": {"message": "boom"}})
                    elif entry["action"] == "401-echo":
                        self._reply(401, {"error": {"message": f"bad key: {entry['authorization']}"}})
                    elif entry["action"] == "stall":
                        time.sleep(proxy.stall)
                        self._reply(500, {"error": {"message": "too late"}})
                    else:
                        conn = http.client.HTTPConnection(proxy.upstream.split("//")[1], timeout=120)
                        conn.request(self.command, self.path, body=body or None,
                                     headers={"content-type": "application/json"})
                        resp = conn.getresponse()
                        data = resp.read()
                        entry["status"] = resp.status
                        self.send_response(resp.status)
                        self.send_header("content-type", resp.getheader("content-type") or "application/json")
                        self.send_header("content-length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        conn.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _reply(self, status: int, obj: dict, headers: dict | None = None):
                data = json.dumps(obj).encode()
                entry_status = status
                self.send_response(entry_status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self, plan: list[str] | None = None) -> None:
        with self.lock:
            self.plan = list(plan or [])
            self.policy = None
            self.log = []

    def forwarded(self) -> list[dict[str, Any]]:
        """Requests that reached the server and were answered 200."""
        return [e for e in self.log if e["action"] == "pass" and e["status"] == 200]
