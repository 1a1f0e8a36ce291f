"""Helpers of the live-analysis tests (``icm watch``): a local webhook receiver that can answer 500, hang, or go
down and come back on the same port; free loopback ports. Traffic stays on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """A JSON webhook on ``127.0.0.1:port``. ``mode``: ``"ok"`` (200), ``"error"`` (500), ``"slow"`` (answers
    after ``slow_seconds``); :meth:`down` closes the socket (connections are refused), :meth:`up` reopens it.
    ``received``: every message body accepted with 200, in order (duplicates included)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.mode = "ok"
        self.slow_seconds = 2.0
        self.received: list[dict] = []
        self.arrivals: list[float] = []
        self.requests = 0
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self):
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with hook._lock:
                    hook.requests += 1
                    mode = hook.mode
                if mode == "slow":
                    time.sleep(hook.slow_seconds)
                status = 500 if mode == "error" else 200
                if status == 200:
                    with hook._lock:
                        hook.received.append(json.loads(body))
                        hook.arrivals.append(time.time())
                with hook._lock:
                    hook.statuses.append(status)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

        return Handler

    def up(self) -> Webhook:
        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def unique_ids(self) -> list[str]:
        with self._lock:
            return list(dict.fromkeys(m["id"] for m in self.received))

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait (bounded) until ``count`` distinct message ids arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.unique_ids()) >= count:
                return True
            time.sleep(0.05)
        return len(self.unique_ids()) >= count
