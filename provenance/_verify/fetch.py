"""Fetching a committed checkpoint directory without letting its listing decide what is read (#22).

The store's directory listing is the trainer's: it may name extra files, or files that declare terabytes. What the
chain commits is the checkpoint digest, the root over the checkpoint manifest (`prov-checkpoint.json`: every file's
path, digest and size). So the manifest is fetched first (a small, capped read) and checked against the committed
digest; then only the files it lists are fetched, each refused before its first byte unless the store's file
declares exactly the listed size, and hashed while it streams to disk. Anything else in the listing is never read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath
from typing import Any

from provenance import limits
from provenance._verify.checks import CheckFailed
from provenance.errors import FormatError, one_line
from provenance.fsutil import atomic_output
from provenance.hashing import Digest
from provenance.manifest import MANIFEST_NAME, CheckpointManifest

MAX_MANIFEST = 16 << 20  # a checkpoint manifest is one line per file: kilobytes
STATE_FILE = "state.json"
SEGMENT_FILE = "steps.jsonl"
MANIFEST_LIMIT = 1 << 20  # a checkpoint manifest lists a handful of files
# Fixed caps on what a checkpoint's small files may declare (an honest state.json is a few KiB; a step-log
# segment ~300 bytes a step, so 64 MiB holds 200,000 steps between two checkpoints): a manifest declaring a
# 2 GiB state.json fails before anything is fetched (here and in the lineage check), instead of the verifier
# streaming it to disk or allocating it.
KIND_LIMITS = {STATE_FILE: 16 << 20, SEGMENT_FILE: 64 << 20, MANIFEST_NAME: MANIFEST_LIMIT}


def can_fetch_listed(store: Any) -> bool:
    """Whether `store` offers the block-level reads a bounded fetch needs (every real backend does)."""
    return all(callable(getattr(store, name, None)) for name in ("list_directory", "get_bytes", "stat", "get_block"))


def _lookup(store: Any, root: str, path: str, listings: dict[str, dict[str, str]]) -> str | None:
    """The CID of `path` (POSIX, relative) under directory `root`, walking one listing per parent; None if absent."""
    cid = root
    for part in PurePosixPath(path).parts:
        if cid not in listings:
            kind, _ = store.stat(cid)
            if kind != "directory":
                return None
            listings[cid] = store.list_directory(cid)
        found = listings[cid].get(part)
        if found is None:
            return None
        cid = found
    return cid


def _stream(store: Any, cid: str, dest: Path, *, size: int) -> Digest:
    """Write file `cid` to `dest` (atomically), hashing as it goes; its declared size must already equal `size`."""
    from provenance._store import dag
    from provenance.cid import parse_cid

    budget = limits.current()
    if budget is not None:
        budget.reserve(size, f"{dest}: file {cid} ({size} bytes)")
    digest = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(dest, mode=0o644, suffix=".part") as out:
            for piece in dag.iter_file(store.get_block, parse_cid(cid)):
                digest.update(piece)
                out.write(piece)
    except OSError as exc:
        raise dag.write_error(dest, exc) from None
    return Digest(digest.digest())


def fetch_listed(store: Any, record: Any, target: Path) -> CheckpointManifest:
    """Fetch into `target` (which must not exist) the manifest and exactly the files it lists of the checkpoint
    `record` commits. CheckFailed when the stored content is not the committed checkpoint (a wrong manifest, a file
    missing, of another size or another digest); the store's errors (unreachable, over budget) pass through."""
    root = str(record.manifest_cid)
    listings: dict[str, dict[str, str]] = {}
    manifest_cid = _lookup(store, root, MANIFEST_NAME, listings)
    if manifest_cid is None:
        raise CheckFailed(f"the stored checkpoint has no {MANIFEST_NAME}", expected=record.checkpoint_digest,
                          found=f"no {MANIFEST_NAME}")
    raw = store.get_bytes(manifest_cid, max_size=MAX_MANIFEST)
    manifest = CheckpointManifest.decode(raw, source=f"{MANIFEST_NAME} of checkpoint {record.index}")
    if manifest.digest() != record.checkpoint_digest:
        raise CheckFailed("the stored checkpoint is not the committed one", expected=record.checkpoint_digest,
                          found=manifest.digest())
    for entry in manifest.files:  # refused before a byte of them is fetched: no trainer writes one this big
        cap = KIND_LIMITS.get(entry.path)
        if cap is not None and entry.size > cap:
            raise CheckFailed(f"the committed manifest declares {entry.path} at {entry.size} bytes, more than any "
                              "trainer writes", expected=f"at most {cap} bytes", found=f"{entry.size} bytes")
    target.mkdir(parents=True)
    (target / MANIFEST_NAME).write_bytes(raw)
    for entry in manifest.files:
        cid = _lookup(store, root, entry.path, listings)
        if cid is None:
            raise CheckFailed(f"the stored checkpoint lacks {entry.path}, which its committed manifest lists",
                              expected=entry.digest, found="no such file")
        kind, declared = store.stat(cid)
        if kind != "file" or declared != entry.size:
            raise CheckFailed(f"the stored {entry.path} is not the committed file (refused before reading it)",
                              expected=f"{entry.size} bytes", found=f"{kind} of {declared} "
                              f"{'bytes' if kind == 'file' else 'entries'}")
        try:
            found = _stream(store, cid, target / entry.path, size=entry.size)
        except FormatError as exc:  # a DAG that does not hold to its declared size: the trainer's content
            raise CheckFailed(f"the stored {entry.path} does not parse: {one_line(exc)}") from None
        if found != entry.digest:
            raise CheckFailed(f"the stored {entry.path} is not the committed file", expected=entry.digest,
                              found=found)
    return manifest
