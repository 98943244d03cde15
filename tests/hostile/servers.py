"""Misbehaving HTTP servers for the hostile-input suite: a fake JSON-RPC node and a fake Kubo-RPC node.

Loopback only, one thread each, every loop bounded (a drip sends at most `drip_bytes` bytes; a flood at most
`flood_bytes`), so a test that goes wrong cannot hang the suite. Each behaviour is one `mode`:

- `drip`: headers at once, then one byte every `drip_every` seconds (a slow-drip attack on the deadline);
- `headdrip`: the status line and headers themselves a byte at a time (`drip_bytes` of them), never the body;
- `flood`: a 200 answer far larger than any honest one (with `declare` also its Content-Length);
- `deep`: JSON nested `depth` deep (a C-stack attack on the parser);
- `notjson`: a 200 answer that is HTML;
- `throttle`: `throttle` answers of HTTP 429, then honest ones (`answer`);
- `honest`: `answer` (a JSON-RPC result for any method, or a Kubo block for block/get).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Behaviour:
    mode: str = "honest"
    answer: bytes = b""
    status: int = 200
    drip_every: float = 1.0
    drip_bytes: int = 120
    flood_bytes: int = 96 << 20
    declare: int | None = None
    depth: int = 200_000
    throttle: int = 2
    requests: list[str] = field(default_factory=list)


def rpc_result(result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": 0, "result": result}).encode()


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output clean
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = self.rfile.read(length) if length else b""
        b = self.behaviour
        b.requests.append(self.path)
        body = b.answer
        if body and request.startswith(b"{"):  # echo the JSON-RPC id so web3 accepts the answer
            doc = json.loads(body)
            doc["id"] = json.loads(request).get("id", 0)
            body = json.dumps(doc).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up: what tests want
            getattr(self, f"_{b.mode}")(b, body)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _honest(self, b: Behaviour, body: bytes) -> None:
        self._send(b.status, body)

    def _throttle(self, b: Behaviour, body: bytes) -> None:
        if b.throttle > 0:
            b.throttle -= 1
            self._send(429, b"slow down", "text/plain")
        else:
            self._send(200, body)

    def _notjson(self, b: Behaviour, body: bytes) -> None:
        self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")

    def _deep(self, b: Behaviour, body: bytes) -> None:
        self._send(b.status, b"[" * b.depth + b"]" * b.depth)

    def _drip(self, b: Behaviour, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(b.drip_bytes))
        self.end_headers()
        for _ in range(b.drip_bytes):
            self.wfile.write(b" ")
            self.wfile.flush()
            time.sleep(b.drip_every)

    def _headdrip(self, b: Behaviour, body: bytes) -> None:
        """The status line and headers themselves, one byte every `drip_every` seconds (then nothing more)."""
        head = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"x" * 40) for i in range(b.drip_bytes))
        for byte in head[: b.drip_bytes]:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(b.drip_every)
        self.close_connection = True

    def _flood(self, b: Behaviour, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if b.declare is not None:
            self.send_header("Content-Length", str(b.declare))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\0" * (1 << 20)
        for _ in range(b.flood_bytes >> 20):
            self.wfile.write(chunk)


@contextmanager
def serve(behaviour: Behaviour) -> Iterator[str]:
    """Run a server with `behaviour` on 127.0.0.1 (a free port); yields its base URL."""
    handler = type("Handler", (_Handler,), {"behaviour": behaviour})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
