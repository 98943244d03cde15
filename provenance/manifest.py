"""Checkpoint and run manifests, and the one function that computes each of their digests.

Checkpoint manifest `prov.checkpoint.v1`: every file of a checkpoint directory by sorted POSIX relative path,
with its SHA-256 and size. The **checkpoint digest** is the RFC 6962 root over leaves
`canonical({"digest", "path", "size"})` in path order, so one file (the adapter a deployer holds) can be proven
part of a checkpoint without revealing the others. `checkpoint_digest()` is the only place it is computed.

Run manifest `prov.run.v2` (v1 still read): canonical JSON of the run's configuration commitments; its digest
(`run_manifest_digest()`) is the run's config commitment. v2 adds `formats` and `owner` (docs/formats.md); a run
trained with canaries (`prov train --canaries M`) also has an optional `canaries` section (provenance.canaries).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from provenance import canonical, merkle
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest, ProgressCallback, hash_file

CHECKPOINT_FORMAT = "prov.checkpoint.v1"
RUN_FORMAT_V1 = "prov.run.v1"
RUN_FORMAT_V2 = "prov.run.v2"
RUN_FORMATS = (RUN_FORMAT_V1, RUN_FORMAT_V2)
RUN_FORMAT = RUN_FORMAT_V1  # the v1 name, kept for callers that validate a v1-shaped body
# Written beside the files of a checkpoint directory; never part of its own digest.
MANIFEST_NAME = "prov-checkpoint.json"
# How a checkpoint's adapter files are written (run manifest `formats.adapter`; absent = v1, docs/formats.md):
# v1: adapter_config.json names the base-model digest as `base_model_name_or_path`, no task type; v2: Hugging Face
# conventions (`task_type` CAUSAL_LM, the base model's directory name), the digest in the adapter's metadata.
ADAPTER_FORMAT_V1 = "prov.adapter.v1"
ADAPTER_FORMAT = "prov.adapter.v2"


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    digest: Digest
    size: int

    def leaf(self) -> bytes:
        return canonical.encode({"digest": str(self.digest), "path": self.path, "size": self.size})


def _check_path(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or str(pure) != path or "\\" in path:
        raise FormatError(f"checkpoint manifest path {path!r} is not a clean relative POSIX path")
    return path


@dataclass(frozen=True, slots=True)
class CheckpointManifest:
    files: tuple[FileEntry, ...]

    def __post_init__(self) -> None:
        paths = [f.path for f in self.files]
        if paths != sorted(paths) or len(set(paths)) != len(paths):
            raise FormatError("checkpoint manifest paths must be unique and sorted")
        for p in paths:
            _check_path(p)

    def digest(self) -> Digest:
        return checkpoint_digest(self)

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise FormatError(f"checkpoint manifest has no file {path!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "files": [{"digest": str(f.digest), "path": f.path, "size": f.size} for f in self.files],
            "format": CHECKPOINT_FORMAT,
        }

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    @classmethod
    def from_json(cls, value: Any, *, source: str = "checkpoint manifest") -> CheckpointManifest:
        if not isinstance(value, dict) or value.get("format") != CHECKPOINT_FORMAT:
            raise FormatError(f"{source}: not a {CHECKPOINT_FORMAT} document")
        files = value.get("files")
        if not isinstance(files, list):
            raise FormatError(f"{source}: 'files' must be a list")
        entries = []
        for item in files:
            if not isinstance(item, dict) or set(item) != {"digest", "path", "size"}:
                raise FormatError(f"{source}: each file needs exactly digest, path and size")
            if not isinstance(item["size"], int) or item["size"] < 0 or not isinstance(item["path"], str):
                raise FormatError(f"{source}: bad entry for {item.get('path')!r}")
            entries.append(FileEntry(_check_path(item["path"]), Digest.parse(item["digest"]), item["size"]))
        return cls(tuple(entries))

    @classmethod
    def decode(cls, data: bytes, *, source: str = "checkpoint manifest") -> CheckpointManifest:
        return cls.from_json(canonical.decode(data, source=source), source=source)


def checkpoint_digest(manifest: CheckpointManifest) -> Digest:
    """The checkpoint digest: RFC 6962 root over the manifest's entries in path order."""
    return Digest(merkle.root_of_data(entry.leaf() for entry in manifest.files))


def hash_directory(
    directory: str | os.PathLike[str], *, progress: ProgressCallback | None = None
) -> CheckpointManifest:
    """Hash every regular file under `directory` (except MANIFEST_NAME) into a checkpoint manifest.

    Symlinks and special files are refused: a checkpoint is plain files only.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory")
    entries: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                raise UsageError(f"{Path(dirpath) / name}: symlinks are not allowed in a checkpoint")
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST_NAME:
                continue
            if path.is_symlink() or not path.is_file():
                raise UsageError(f"{path}: only regular files are allowed in a checkpoint")
            entries.append(FileEntry(rel, hash_file(path, progress=progress), path.stat().st_size))
    entries.sort(key=lambda e: e.path)
    return CheckpointManifest(tuple(entries))


RUN_ID_LABEL = b"prov.run_id.v1\x00"


def run_id_of(body: Mapping[str, Any]) -> str:
    """The run id a manifest body names itself by: `SHA-256("prov.run_id.v1\\x00" || canonical(body without
    run_id))` as 64 hex. A manifest whose `run_id` is not this was altered (or forged to borrow another run's id)."""
    import hashlib

    rest = {k: v for k, v in body.items() if k != "run_id"}
    return hashlib.sha256(RUN_ID_LABEL + canonical.encode(rest)).hexdigest()


def run_manifest_digest(document: Mapping[str, Any]) -> Digest:
    """The run's config commitment: SHA-256 of the canonical run manifest."""
    return Digest.of(encode_run_manifest(document))


_RUN_REQUIRED = {
    "format": str,
    "run_id": str,
    "base_model": dict,
    "dataset": dict,
    "secrets": dict,
    "training": dict,
    "software": dict,
    "determinism": dict,
}


def validate_run_manifest(document: Any, *, source: str = "run manifest") -> dict[str, Any]:
    """Check the required shape of a run manifest read from a trust boundary."""
    if not isinstance(document, dict):
        raise FormatError(f"{source}: must be a JSON object")
    for key, kind in _RUN_REQUIRED.items():
        if not isinstance(document.get(key), kind):
            raise FormatError(f"{source}: field {key!r} missing or not a {kind.__name__}")
    if document["format"] not in RUN_FORMATS:
        raise FormatError(f"{source}: unknown format {document['format']!r} (expected one of "
                          f"{', '.join(RUN_FORMATS)})")
    if document["format"] == RUN_FORMAT_V2:
        owner = document.get("owner")
        if not isinstance(document.get("formats"), dict) or not (owner is None or isinstance(owner, str)):
            raise FormatError(f"{source}: a {RUN_FORMAT_V2} manifest needs `formats` (an object) and `owner` "
                              "(an address or null)")
    if "canaries" in document:  # only runs trained with `--canaries M` (M > 0) have it (provenance.canaries)
        from provenance.canaries import check_section

        check_section(document["canaries"], source=source)
    for key in ("digest",):
        Digest.parse(document["base_model"].get(key, ""))
    Digest.parse(document["dataset"].get("root", ""))
    Digest.parse(document["secrets"].get("noise_seed_commitment", ""))
    return document


def encode_run_manifest(document: Mapping[str, Any]) -> bytes:
    return canonical.encode(validate_run_manifest(dict(document)))


def decode_run_manifest(data: bytes, *, source: str = "run manifest") -> dict[str, Any]:
    return validate_run_manifest(canonical.decode(data, source=source), source=source)
