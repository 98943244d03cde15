"""What the auditor hands in, read without trusting it: one subject model per thing a user can point at, each
knowing which files it binds (`provenance._verify.files` says which files loaders read).

- `adapter`: one adapter weights file. Named `adapter_model.safetensors`, PEFT loading its directory would also read
  the `adapter_config.json` beside it: that companion is bound too; other loader-read files beside it are listed.
- `adapter_dir`: a shipped adapter directory (`adapter_model.safetensors` with some of its checkpoint's files and
  files no loader reads, such as a README): every file a loader reads must be the committed checkpoint's file.
- `checkpoint`: a trainer's checkpoint directory (it holds state.json, steps.jsonl, optimizer.safetensors or
  prov-checkpoint.json): every committed file must be there and be the committed one. Without its adapter it is
  still a subject (its record is found through the weights its own manifest or state.json names), so the verdict is
  a failed `checkpoint` check, not a usage error.
- `merged`: a model directory with config.json and *.safetensors, or one safetensors file whose tensors are named
  like a model's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._verify import files as loaders
from provenance.basemodel import PICKLE_SUFFIXES
from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import MANIFEST_NAME, CheckpointManifest, FileEntry, hash_directory
from provenance.merge import is_adapter_header
from provenance.safetensors import read_header, read_safetensors_metadata

__all__ = ["ADAPTER_FILE", "Subject", "load_subject", "read_safetensors_metadata"]

ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Subject:
    path: Path
    kind: str  # "adapter" | "adapter_dir" | "checkpoint" | "merged"
    adapter: Path  # a merged model: its first weights file; a checkpoint without its adapter: where it should be
    # The file's SHA-256; a merged model in several files: the root of a prov.checkpoint.v1 manifest of them
    weights_digest: Digest
    metadata: dict[str, str] = field(default_factory=dict)
    checkpoint_digest: Digest | None = None
    files: tuple[Path, ...] = ()  # a merged model's safetensors files, sorted by name
    file_digests: tuple[Digest, ...] = ()  # a merged model: each of `files`' SHA-256, in the same order
    # adapter, adapter_dir, checkpoint: the files around the weights a loader reads, to compare with the committed
    # checkpoint's (None: a file not named as PEFT names it, so no loader reads anything beside it)
    fileset: loaders.FileSet | None = None
    adapter_missing: bool = False  # a checkpoint directory without its adapter file


def load_subject(path: Path) -> Subject:
    """Hash what the auditor holds. A directory is a checkpoint (it holds adapter_model.safetensors) or a merged
    model; a file is adapter weights when it is named adapter_model.safetensors or its tensors are named like a
    PEFT adapter's, else a merged model."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        if {"run.json", "checkpoints"} <= names:
            raise UsageError(f"{path}: a run directory; verify its final adapter ({path / 'final'}) or one of its "
                             f"checkpoints ({path / 'checkpoints'}/NNNNNN)")
        if names & loaders.CHECKPOINT_MARKERS:
            return _checkpoint_directory(path)
        if ADAPTER_FILE in names or (names & {loaders.ADAPTER_CONFIG, loaders.PICKLED_ADAPTER}
                                     and "config.json" not in names):
            return _adapter_directory(path)
        return _merged_directory(path)
    header = read_header(path)
    if path.name != ADAPTER_FILE and header.tensors and not is_adapter_header(header):
        digest = hash_file(path)
        return Subject(path, "merged", path, digest, dict(header.metadata), files=(path,), file_digests=(digest,))
    fileset = _companions(path.parent) if path.name == ADAPTER_FILE else None
    return Subject(path, "adapter", path, hash_file(path), dict(header.metadata), fileset=fileset)


def scan(directory: Path, *, complete: bool = False) -> loaders.FileSet:
    """Every top-level entry of `directory`, as a loader sees it (links followed): regular files hashed, files no
    loader reads listed, anything unbindable (a sub-directory, a special file, a broken link) refused with why."""
    entries, unread, refused = [], [], []
    manifest: bytes | None = None
    for child in sorted(directory.iterdir(), key=lambda p: p.name):
        name = child.name
        try:
            info = child.stat()  # follows symbolic links, as the loaders do
        except OSError:
            refused.append(f"{name}: a broken link or an entry that cannot be read")
            continue
        if stat.S_ISDIR(info.st_mode):
            if loaders.is_unread(name) and name.startswith("."):
                unread.append(name + "/")
            else:
                refused.append(f"{name}/ is a sub-directory (PEFT reads one with subfolder=, and several adapters "
                               "are saved that way)")
            continue
        if not stat.S_ISREG(info.st_mode):
            refused.append(f"{name} is not a regular file")
            continue
        if loaders.is_unread(name):
            unread.append(name)
            continue
        if name == MANIFEST_NAME and info.st_size <= canonical.MAX_DOCUMENT:
            manifest = child.read_bytes()
        entries.append(FileEntry(name, hash_file(child), info.st_size))
    return loaders.FileSet(tuple(entries), tuple(unread), tuple(refused), complete=complete, manifest=manifest)


def _companions(directory: Path) -> loaders.FileSet:
    """Beside a lone adapter_model.safetensors: its adapter_config.json (which PEFT loading that directory reads) is
    bound; other files a loader of that directory reads are named as not bound."""
    config = directory / loaders.ADAPTER_CONFIG
    entries: tuple[FileEntry, ...] = ()
    refused: tuple[str, ...] = ()
    if os.path.lexists(config):
        try:
            info = config.stat()
        except OSError:
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            refused = (f"the {loaders.ADAPTER_CONFIG} beside this file is not a regular file",)
        else:
            entries = (FileEntry(loaders.ADAPTER_CONFIG, hash_file(config), info.st_size),)
    beside = tuple(sorted(p.name for p in directory.iterdir() if p.name in loaders.TOKENIZER_READS))
    return loaders.FileSet(entries, refused=refused, lone=True, beside=beside)


def _adapter_directory(path: Path) -> Subject:
    fileset = scan(path)
    adapter = path / ADAPTER_FILE
    if ADAPTER_FILE not in fileset.names():
        if (path / loaders.PICKLED_ADAPTER).exists():
            raise UsageError(f"{path}: its adapter is only in {loaders.PICKLED_ADAPTER}, a pickle that prov never "
                             f"loads; ask for the {ADAPTER_FILE} the run committed")
        raise UsageError(f"{path}: an adapter directory without a regular {ADAPTER_FILE}: nothing to verify")
    digest = next(e.digest for e in fileset.entries if e.path == ADAPTER_FILE)
    return Subject(path, "adapter_dir", adapter, digest, read_safetensors_metadata(adapter), fileset=fileset)


def _checkpoint_directory(path: Path) -> Subject:
    fileset = scan(path, complete=True)
    adapter = path / ADAPTER_FILE
    try:
        digest: Digest | None = hash_directory(path).digest()
    except UsageError:  # a link or special file: refused by the file-set check instead
        digest = None
    if ADAPTER_FILE in fileset.names():
        entry = next(e for e in fileset.entries if e.path == ADAPTER_FILE)
        return Subject(path, "checkpoint", adapter, entry.digest, read_safetensors_metadata(adapter), digest,
                       fileset=fileset)
    weights, metadata = _named_weights(path)
    return Subject(path, "checkpoint", adapter, weights, metadata, digest, fileset=fileset, adapter_missing=True)


def _named_weights(path: Path) -> tuple[Digest, dict[str, str]]:
    """A checkpoint directory without its adapter: the weights digest its own prov-checkpoint.json or state.json
    names (only to find its on-chain record: the checkpoint check then fails), and the run and index state.json
    names (to rank claims)."""
    weights: Digest | None = None
    metadata: dict[str, str] = {}
    state = _document(path / "state.json")
    if isinstance(state, dict):
        if isinstance(state.get("run_id"), str):
            metadata["prov.run_id"] = state["run_id"]
        if canonical.is_count(state.get("checkpoint"), 0):
            metadata["prov.checkpoint"] = str(state["checkpoint"])
        weights = _digest(state.get("weights"))
    manifest = _document(path / MANIFEST_NAME)
    if weights is None and manifest is not None:
        try:
            weights = CheckpointManifest.from_json(manifest).file(ADAPTER_FILE).digest
        except FormatError:
            weights = None
    if weights is None:
        raise UsageError(f"{path}: a checkpoint directory without {ADAPTER_FILE}, and neither its state.json nor its "
                         f"{MANIFEST_NAME} names the adapter's digest: nothing says which checkpoint it is")
    return weights, metadata


def _document(path: Path) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > canonical.MAX_DOCUMENT:
            return None
        return canonical.load_json(path.read_bytes(), source=str(path))
    except (OSError, ValueError, FormatError):
        return None


def _digest(value: Any) -> Digest | None:
    try:
        return Digest.parse(value) if isinstance(value, str) else None
    except (ValueError, FormatError):
        return None


def _merged_directory(path: Path) -> Subject:
    names = sorted(p.name for p in path.iterdir() if p.is_file() and not p.is_symlink())
    weights = [path / n for n in names if n.endswith(".safetensors")]
    if not weights:
        if any(n.endswith(PICKLE_SUFFIXES) for n in names):
            raise UsageError(f"{path}: its weights are only in a pickle format (.bin/.pt), which prov never loads; "
                             "convert them with `model.save_pretrained(dir, safe_serialization=True)`")
        raise UsageError(f"{path}: neither a checkpoint directory (no {ADAPTER_FILE}) nor a merged model directory "
                         "(no *.safetensors weights)")
    if "config.json" not in names:
        raise UsageError(f"{path}: not a model directory (no config.json); pass a checkpoint directory, an adapter "
                         "file, or a merged model directory")
    for weights_file in weights:
        if is_adapter_header(read_header(weights_file)):
            raise UsageError(f"{weights_file}: holds LoRA adapter tensors; verify the adapter file itself")
    metadata = read_safetensors_metadata(weights[0])
    entries = tuple(FileEntry(w.name, hash_file(w), w.stat().st_size) for w in weights)
    digest = entries[0].digest if len(weights) == 1 else CheckpointManifest(entries).digest()
    return Subject(path, "merged", weights[0], digest, metadata, files=tuple(weights),
                   file_digests=tuple(e.digest for e in entries))
