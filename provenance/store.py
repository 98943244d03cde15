"""The content-addressed artifact store: one interface, two backends, every read verified.

Artifacts (run manifests, step logs, checkpoint directories) are addressed by the CIDv1 Kubo gives them with
`ipfs add [-r] --cid-version=1 --raw-leaves`, so any IPFS node or pinning service reproduces the address.

- `local` (default): a blockstore folder in the project state directory (`<state>/store`); no daemon.
- `kubo:<multiaddr or URL>`: any Kubo-RPC node (Kubo, js-ipfs) through `ipfshttpclient`, with timeouts.

Whatever the backend, every block read is re-hashed against its CID before use (`CidMismatch` otherwise),
and DAG structure is checked as it is walked; CAR v1 export/import moves artifacts between stores.
Open one with `open_store(spec)`: this module is a plain factory. The interface and its errors live in
`provenance._store.base` (re-exported here), the backends in `provenance._store.local` / `.kubo`, which never
import this module. `bytes_cid`, `file_cid` and `directory_cid` give an artifact's CID without storing it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from provenance._store.base import (
    DEFAULT_MAX_BYTES,
    BlockNotFound,
    CidMismatch,
    ContentTooLarge,
    NotPinned,
    Store,
    StoreAddressError,
    StoreError,
    StoreUnavailable,
    StoreWriteError,
    UnexpectedCid,
)
from provenance._store.unixfs import bytes_cid, directory_cid, file_cid

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BlockNotFound",
    "CidMismatch",
    "ContentTooLarge",
    "NotPinned",
    "Store",
    "StoreAddressError",
    "StoreError",
    "StoreUnavailable",
    "StoreWriteError",
    "UnexpectedCid",
    "bytes_cid",
    "directory_cid",
    "file_cid",
    "open_store",
]

def open_store(spec: str | None = None, *, home: Path | None = None, timeout: float | None = None) -> Store:
    """Open a store from a spec: `local`, `local:<dir>`, or `kubo:<multiaddr|http(s) URL>`.

    With no spec, the project config section `store` decides (`{"spec": "...", "timeout": seconds}`), and
    without one, `local` (the blockstore under `<state_dir>/store`).
    """
    options: dict[str, Any] = {}
    if spec is None:
        from provenance.config import get_section

        section = get_section("store", home)
        spec = section.get("spec", "local")
        if not isinstance(spec, str):
            raise StoreAddressError("project config store.spec must be a string like 'local' or 'kubo:<addr>'")
        if "timeout" in section:
            options["timeout"] = float(section["timeout"])
    if timeout is not None:
        options["timeout"] = timeout
    kind, _, rest = spec.strip().partition(":")
    if kind == "local":
        from provenance._store.local import LocalStore
        from provenance.config import subdir

        root = Path(rest).expanduser() if rest else subdir("store", home=home, create=False)
        return LocalStore(root)
    if kind == "kubo":
        from provenance._store.kubo import KuboStore

        if not rest:
            raise StoreAddressError("kubo store needs an API address, e.g. kubo:/ip4/127.0.0.1/tcp/5001")
        return KuboStore(rest, **options)
    raise StoreAddressError(f"unknown store {spec!r}: use 'local', 'local:<dir>' or 'kubo:<multiaddr or URL>'")
