"""A real webhook receiver over HTTP on 127.0.0.1, verifying every request with the `standardwebhooks` package.

What it answers is set per test: `mode` "ok" (204), "fail" (500), "hang" (answers only after
`hang_seconds`) or "redirect" (302 to /redirected on itself, which records any request that follows).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any  # the parsed body when the signature verified, else None
    error: str | None  # why it did not verify

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self) -> None:
        self.mode = "ok"
        self.hang_seconds = 3.0
        self.secrets: dict[str, str] = {}  # path → the secret of the subscription posting there
        self.received: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = None, None
                secret = receiver.secrets.get(self.path)
                if secret is None:
                    error = "no secret for this path"
                else:
                    try:
                        verified = Webhook(secret).verify(body, headers)
                    except WebhookVerificationError as exc:
                        error = str(exc)
                with receiver.lock:
                    receiver.received.append(Received(self.command, self.path, headers, body, verified, error))
                mode = receiver.mode
                if mode == "hang":
                    time.sleep(receiver.hang_seconds)
                if mode == "redirect" and self.path != "/redirected":
                    self.send_response(302)
                    self.send_header("Location", "/redirected")
                elif mode == "fail":
                    self.send_response(500)
                else:
                    self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _handle  # noqa: N815 (http.server's naming)
            do_GET = _handle  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def posts(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.received if path is None or r.path == path]

    def payload(self, index: int = 0, path: str | None = None) -> dict[str, Any]:
        return dict(json.loads(self.posts(path)[index].body))


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    """A running receiver; import `receiver_fixture` into a test module to use `receiver`."""
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()
