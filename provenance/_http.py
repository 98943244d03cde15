"""One bounded HTTP POST for the clients that talk to nodes the auditor does not control (JSON-RPC, Kubo-RPC).

`requests` alone bounds each socket read, not a request: a server sending one byte every few seconds keeps it
waiting forever, and a 1 GiB answer is read whole into memory. Here every request has a wall-clock deadline
(checked between reads of the body, each read at most one `recv`; a request still in its status line or headers at
the deadline is given up by its caller, `_by_deadline`), a cap on the answer's size (checked while reading, and up
front against Content-Length), no transparent decompression (a gzip bomb is not expanded), and a bounded number of
retries with backoff on 429 and 5xx (honouring a short Retry-After), all within the same deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from provenance import limits
from provenance.errors import one_line

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 4  # the first try and three retries
BACKOFF = 0.25  # seconds before the first retry; doubled each time
MAX_RETRY_AFTER = 5.0  # a Retry-After longer than this is not waited for
_READ = 1 << 16
GRACE = 0.5  # seconds past the deadline before a request stuck in its headers is given up (the body's own checks
# fire first)
_T = TypeVar("_T")


class HttpFailure(Exception):
    """Why a bounded request gave no usable answer; the caller turns it into its own one-line typed error."""

    def __init__(self, reason: str, *, timed_out: bool = False, too_large: bool = False, stalled: bool = False,
                 status: int | None = None, body: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.timed_out = timed_out
        self.stalled = stalled  # it began answering, then ran past the deadline: slow on purpose, or broken
        self.too_large = too_large
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def post(session: Any, url: str, *, timeout: float, max_bytes: int, what: str, data: Any = None,
         params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
         retry: bool = True) -> Answer:
    """POST and read the whole answer within `timeout` seconds (and the active budget's deadline) and `max_bytes`.

    Retries 429/5xx (when `retry`) with exponential backoff inside the same deadline. Answers with another status
    are returned (the caller reads JSON-RPC or Kubo error bodies), their bodies capped like any other.
    Raises HttpFailure: unreachable, timed out, too large, or still 429/5xx after the retries.
    """
    import requests
    import urllib3

    started = time.monotonic()
    limit = limits.request_timeout(timeout, what)
    deadline = started + limit
    sent_headers = {"Accept-Encoding": "identity", **(headers or {})}
    for attempt in range(MAX_ATTEMPTS):
        left = deadline - time.monotonic()
        if left <= 0:
            raise HttpFailure(f"no answer to {what} within {limit:.1f}s", timed_out=True)

        def attempt_once(left: float = left) -> tuple[int, bytes, str | None]:
            try:
                with session.post(url, data=data, params=params, headers=sent_headers, stream=True,
                                  timeout=(min(left, 10.0), left)) as response:
                    status = int(response.status_code)
                    body = _read(response, deadline=deadline, max_bytes=max_bytes, what=what, limit=limit)
                    return status, body, response.headers.get("Retry-After")
            except requests.exceptions.Timeout:
                raise HttpFailure(f"no answer to {what} within {limit:.1f}s", timed_out=True) from None
            except requests.exceptions.ConnectionError as exc:
                text = one_line(exc)
                if "timed out" in text.lower():
                    raise HttpFailure(f"no answer to {what} within {limit:.1f}s", timed_out=True) from None
                raise HttpFailure("connection refused" if "refused" in text.lower() else text[:160]) from None
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
                text = one_line(exc)
                if isinstance(exc, urllib3.exceptions.TimeoutError) or "timed out" in text.lower():
                    raise HttpFailure(f"no answer to {what} within {limit:.1f}s", timed_out=True) from None
                raise HttpFailure(text[:160] or type(exc).__name__) from None

        status, body, retry_after = _by_deadline(attempt_once, deadline=deadline, what=what, limit=limit)
        answered = status == 500 and body.lstrip()[:1] in (b"{", b"[")  # an error the node chose to give (JSON)
        if status not in RETRY_STATUSES or answered or not retry:
            return Answer(status, body)
        wait = BACKOFF * 2**attempt
        if retry_after is not None and retry_after.strip().isdigit():
            wait = max(wait, float(retry_after.strip()))
        if attempt == MAX_ATTEMPTS - 1 or wait > MAX_RETRY_AFTER or time.monotonic() + wait >= deadline:
            raise HttpFailure(f"{what} answered HTTP {status} {attempt + 1} times; the node is overloaded or "
                              "rate-limiting: try again later or use another node", status=status, body=body[:300])
        time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _by_deadline(call: Callable[[], _T], *, deadline: float, what: str, limit: float) -> _T:
    """`call()` in a worker thread, given up at the deadline: the socket timeout bounds each read, and `_read`
    checks the deadline between reads of the body, but a node dripping its status line and headers a byte at a time
    is inside `requests` until they end. Given up, the thread (a daemon) is left to end with the connection (it holds
    one pooled connection meanwhile; urllib3's pool is thread-safe, and later requests open others); the caller gets
    the timeout now. A node that keeps dripping headers keeps that thread alive: a cost bounded by one thread per
    given-up request, paid only against a node that stalls on purpose."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the caller's thread as is
            box["error"] = exc

    worker = threading.Thread(target=run, name="prov-http", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()) + GRACE)
    if worker.is_alive():
        raise HttpFailure(f"{what} was still answering after {limit:.1f}s (a slow or stalling node)",
                          timed_out=True, stalled=True)
    if "error" in box:
        raise box["error"]
    return cast(_T, box["value"])


def _read(response: Any, *, deadline: float, max_bytes: int, what: str, limit: float) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise HttpFailure(f"{what} answered {int(declared)} bytes, more than the {max_bytes}-byte limit for such an "
                          "answer", too_large=True)
    raw = response.raw
    body = bytearray()
    while True:
        if time.monotonic() >= deadline:
            raise HttpFailure(f"{what} was still answering after {limit:.1f}s (a slow or stalling node)",
                              timed_out=True, stalled=True)
        chunk = raw.read1(_READ, decode_content=False)  # at most one recv: the deadline is checked between them
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            raise HttpFailure(f"{what} answered more than the {max_bytes}-byte limit for such an answer",
                              too_large=True)
