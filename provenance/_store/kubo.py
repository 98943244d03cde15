"""The Kubo-RPC backend: any node speaking Kubo's HTTP API (Kubo, js-ipfs), through `ipfshttpclient`.

- `ipfshttpclient.connect()` refuses every modern daemon on a version check, so the `Client` is built
  directly. Every call carries a client-side timeout, and fetches also a server-side one (`timeout=` query
  option, which Kubo and js-ipfs both honour), so a CID nobody has fails fast instead of hanging.
- Adds use `--cid-version=1 --raw-leaves --chunker=size-262144`; the CID the node answers is compared with the
  one computed locally, so a node configured differently cannot silently give artifacts another address.
- Reads fetch block by block (`block/get`) and verify each against its CID: the node is never trusted.
"""

from __future__ import annotations

import ipaddress
import math
import os
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from provenance import car
from provenance._store import dagpb, unixfs
from provenance._store.base import (
    BlockNotFound,
    NotPinned,
    Store,
    StoreAddressError,
    StoreError,
    StoreUnavailable,
    UnexpectedCid,
)
from provenance._store.unixfs import bytes_cid, directory_cid
from provenance.cid import MAX_BLOCK_SIZE, RAW, Cid, cid_text, parse_cid
from provenance.errors import FormatError
from provenance.hashing import ProgressCallback

# ipfshttpclient 0.7 passes urllib3 a parameter it deprecated; the warning says nothing to a prov user.
warnings.filterwarnings("ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning)

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0
HAS_TIMEOUT = 2.0  # `has` asks the node about its own blockstore only
_ADD_OPTIONS = {
    "cid-version": "1",
    "raw-leaves": "true",
    "chunker": f"size-{unixfs.CHUNK_SIZE}",
    "cid-base": "base32",
}
_NOT_FOUND_HINTS = ("timed out", "deadline exceeded", "not found", "no link named", "could not find")


def to_multiaddr(address: str) -> str:
    """Normalise a Kubo API address (`/ip4/.../tcp/PORT[/http]` or `http(s)://host:port`) to a multiaddr."""
    address = address.strip()
    if address.startswith("/"):
        return address
    url = urllib.parse.urlsplit(address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise StoreAddressError(f"bad IPFS API address {address!r}: use a multiaddr or an http(s)://host:port URL")
    if url.path not in ("", "/", "/api/v0", "/api/v0/") or url.query or url.fragment:
        raise StoreAddressError(f"bad IPFS API address {address!r}: give only scheme, host and port")
    try:
        port = url.port or (443 if url.scheme == "https" else 80)
    except ValueError:
        raise StoreAddressError(f"bad IPFS API address {address!r}: invalid port") from None
    try:
        ip = ipaddress.ip_address(url.hostname)
        host = f"/ip{ip.version}/{ip}"
    except ValueError:
        host = f"/dns/{url.hostname}"
    return f"{host}/tcp/{port}/{url.scheme}"


class KuboStore(Store):
    """A store backed by a Kubo-RPC node."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        import ipfshttpclient
        from ipfshttpclient.http_common import multiaddr_to_url_data

        if not (timeout > 0 and math.isfinite(timeout)):
            raise StoreAddressError(f"store timeout must be a positive number of seconds, got {timeout}")
        self.address = to_multiaddr(address)
        self.spec = f"kubo:{self.address}"
        self.timeout = float(timeout)
        try:
            self.url = multiaddr_to_url_data(self.address, "api/v0")[0]
        except Exception:  # multiaddr raises a zoo of types for bad input
            raise StoreAddressError(
                f"bad IPFS API multiaddr {address!r}: expected e.g. /ip4/127.0.0.1/tcp/5001 or http://host:5001"
            ) from None
        # The client-side timeout outlasts the server-side one, so a slow fetch reports as "not found".
        self._client = ipfshttpclient.Client(self.address, timeout=self.timeout + 5.0)
        import requests

        self._session = requests.Session()  # reads go through provenance._http (bounded), not ipfshttpclient
        self._stalled: str | None = None

    def close(self) -> None:
        self._client.close()
        self._session.close()

    # -- error mapping ------------------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, cid: Cid | None = None, **kwargs: Any) -> T:
        from ipfshttpclient import exceptions as ex

        try:
            return fn(*args, **kwargs)
        except ex.ConnectionError as exc:
            raise StoreUnavailable(
                f"cannot reach the IPFS API at {self.url} ({_reason(exc)}); is the daemon running?"
            ) from None
        except ex.TimeoutError:
            raise StoreUnavailable(f"the IPFS API at {self.url} did not answer {what} in time") from None
        except ex.ProtocolError as exc:  # a read timeout mid-response surfaces as an aborted connection
            if "timed out" in str(exc):
                raise StoreUnavailable(f"the IPFS API at {self.url} did not answer {what} in time") from None
            raise StoreUnavailable(f"the IPFS API at {self.url} broke off {what}: {_reason(exc)}") from None
        except ex.ErrorResponse as exc:
            message = str(exc)
            if cid is not None and any(hint in message.lower() for hint in _NOT_FOUND_HINTS):
                raise BlockNotFound(cid, f"{self.url} could not provide it within {self.timeout:g}s") from None
            raise StoreError(f"IPFS API at {self.url}: {what} failed: {message}") from None
        except ex.Error as exc:
            raise StoreError(f"IPFS API at {self.url}: {what} failed: {_reason(exc)}") from None
        except RecursionError:  # the node is not trusted: JSON nested past Python's parser is an answer too
            raise StoreError(f"IPFS API at {self.url}: {what} answered JSON nested too deeply") from None

    def _server_timeout(self, seconds: float | None = None) -> dict[str, str]:
        return {"timeout": f"{int((seconds or self.timeout) * 1000)}ms"}

    # -- reads --------------------------------------------------------------------------------------------

    def _read_block(self, cid: Cid) -> bytes:
        """`block/get` through the bounded POST: a wall-clock deadline (also the active budget's), at most
        MAX_BLOCK_SIZE + 1 bytes read (a 1 GiB "block" is refused after 2 MiB), error bodies parsed bounded."""
        from provenance import _http, limits

        what = f"block/get {cid}"
        if self._stalled is not None:  # a node that already ran out a deadline is not waited for again
            raise StoreUnavailable(self._stalled)
        seconds = limits.request_timeout(self.timeout, f"IPFS API at {self.url}: {what}")
        try:
            answer = _http.post(self._session, f"{self.url.rstrip('/')}/block/get", what=f"{what} at {self.url}",
                                params={"arg": str(cid), **self._server_timeout(seconds)},
                                timeout=seconds + 5.0, max_bytes=MAX_BLOCK_SIZE + 1)
        except _http.HttpFailure as exc:
            if exc.timed_out:
                reason = f"the IPFS API at {self.url}: {exc.reason}; try again later or use another node"
                if exc.stalled:
                    self._stalled = reason
                raise StoreUnavailable(reason) from None
            if exc.status is not None:
                raise StoreUnavailable(f"the IPFS API at {self.url}: {exc.reason}") from None
            if exc.too_large:
                raise StoreUnavailable(f"the IPFS API at {self.url}: {exc.reason} (no IPFS block is larger than "
                                       f"{MAX_BLOCK_SIZE} bytes): a faulty or hostile node") from None
            raise StoreUnavailable(f"cannot reach the IPFS API at {self.url} ({exc.reason}); is the daemon "
                                   "running?") from None
        if answer.status == 200:
            return answer.body
        message = _error_message(answer.body, self.url)
        if any(hint in message.lower() for hint in _NOT_FOUND_HINTS):
            raise BlockNotFound(cid, f"{self.url} could not provide it within {seconds:g}s")
        raise StoreUnavailable(f"IPFS API at {self.url}: {what} failed (HTTP {answer.status}: {message})")

    def has(self, cid: str) -> bool:
        root = parse_cid(cid)
        try:
            self._call(f"block/stat {root}", self._client.block.stat, str(root), cid=root, offline=True,
                       opts=self._server_timeout(HAS_TIMEOUT))
        except BlockNotFound:
            return False
        return True

    # -- writes -------------------------------------------------------------------------------------------

    def _options(self, pin: bool) -> dict[str, str]:
        return {**_ADD_OPTIONS, "pin": "true" if pin else "false"}

    def _add_args(self, pin: bool) -> dict[str, Any]:
        # `Client.add` overwrites `opts` with its own keyword defaults (pin=True...): pass those as keywords.
        return {"pin": pin, "raw_leaves": True, "cid_version": 1, "chunker": _ADD_OPTIONS["chunker"],
                "opts": {"cid-base": "base32"}}

    def _check(self, what: str, expected: str, answered: Any, *, pin: bool) -> str:
        try:
            found = str(parse_cid(str(answered)))
        except FormatError:
            shown = repr(answered)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise StoreError(f"IPFS API at {self.url}: add {what} answered {shown}, not a CID") from None
        if found != expected:
            if pin:  # leave nothing pinned under an address prov would never look up
                self._call("pin/rm", self._client.pin.rm, found, opts=self._server_timeout())
            raise UnexpectedCid(
                f"{self.url} stored {what} as {found}, but prov computes {expected}; "
                "is the node adding with other settings (chunker, CID version, raw leaves)?"
            )
        return found

    def put_bytes(self, data: bytes, *, pin: bool = True) -> str:
        expected = bytes_cid(data)
        answered = self._call("add (bytes)", self._client.add_bytes, data, opts=self._options(pin))
        return self._check("the bytes", expected, answered, pin=pin)

    def put_file(self, path: str | os.PathLike[str], *, pin: bool = True,
                 progress: ProgressCallback | None = None) -> str:
        source = Path(path)
        with unixfs.open_input(source) as stream:
            total = os.fstat(stream.fileno()).st_size
            report = None if progress is None else (lambda done: progress(done, total))
            expected = cid_text(unixfs.build_file(stream, progress=report).cid)
        result = self._call(f"add {source}", self._client.add, str(source), **self._add_args(pin))
        entry = result[-1] if isinstance(result, list) and result else result
        return self._check(str(source), expected, _hash_of(entry), pin=pin)

    def put_directory(self, path: str | os.PathLike[str], *, pin: bool = True) -> str:
        source = Path(path)
        expected = directory_cid(source)  # also refuses symlinks, special files and HAMT-sized folders
        result = self._call(f"add -r {source}", self._client.add, str(source), recursive=True,
                            **self._add_args(pin))
        entries = [e for e in (result if isinstance(result, list) else [result]) if isinstance(e, Mapping)]
        top = [e for e in entries if e.get("Name") == source.name] or entries[-1:]
        if not top:
            raise StoreError(f"IPFS API at {self.url}: add -r {source} answered nothing")
        return self._check(str(source), expected, _hash_of(top[-1]), pin=pin)

    # -- pins and gc --------------------------------------------------------------------------------------

    def pin(self, cid: str) -> None:
        root = parse_cid(cid)
        self._call(f"pin/add {root}", self._client.pin.add, str(root), cid=root, opts=self._server_timeout())

    def unpin(self, cid: str) -> None:
        root = parse_cid(cid)
        try:
            self._call(f"pin/rm {root}", self._client.pin.rm, str(root), opts=self._server_timeout())
        except StoreError as exc:
            if "not pinned" in str(exc):
                raise NotPinned(f"{root} is not pinned on {self.url}") from None
            raise

    def pins(self) -> list[str]:
        answer = self._call("pin/ls", self._client.pin.ls, type="recursive", opts={"cid-base": "base32"})
        keys = answer.get("Keys") if isinstance(answer, Mapping) else None
        if not isinstance(keys, Mapping):
            raise StoreError(f"IPFS API at {self.url}: pin/ls answered no Keys object")
        return sorted(str(parse_cid(str(key))) for key in keys)

    def gc(self) -> int:
        removed = self._call("repo/gc", self._client.repo.gc, opts={"timeout": "600s"})
        items = removed if isinstance(removed, list) else []
        return sum(1 for item in items if isinstance(item, Mapping) and not item.get("Error"))

    # -- CAR ----------------------------------------------------------------------------------------------

    def import_car(self, path: str | os.PathLike[str]) -> list[str]:
        """Verify the whole CAR locally (hashes, complete DAGs) before the node sees it, then `dag/import`."""
        source = Path(path)
        present: set[Cid] = set()
        linked: set[Cid] = set()
        with car.CarReader(source) as reader:
            roots = reader.roots
            for cid, block in reader:
                present.add(cid)
                if cid.codec != RAW:
                    linked.update(Cid.from_bytes(link.cid)[0] for link in dagpb.decode_links(block))
        missing = (linked | set(roots)) - present
        if missing:
            raise BlockNotFound(sorted(map(str, missing))[0],
                                f"{source} does not hold the whole DAG ({len(missing)} blocks missing)")
        with source.open("rb") as stream:
            self._call(f"dag/import {source}", self._client.dag.imprt, stream,
                       opts={"pin-roots": "true", "timeout": "600s"})
        return [str(root) for root in roots]


def _error_message(body: bytes, url: str) -> str:
    """The `Message` of a Kubo error body, read with the bounded JSON reader (a node's body is untrusted)."""
    from provenance.canonical import escape_controls, load_json

    try:
        doc = load_json(body, source=f"the error answer of {url}", max_size=64 << 10)
    except FormatError as exc:
        return str(exc)
    message = doc.get("Message") if isinstance(doc, dict) else None
    return escape_controls(" ".join(message.split())[:200]) if isinstance(message, str) else "no error message"


def _hash_of(entry: Any) -> Any:
    """The `Hash` of one `add` answer entry (None when the node answered something else)."""
    return entry.get("Hash") if isinstance(entry, Mapping) else None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    return " ".join(text.split())[:200]
