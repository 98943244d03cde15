"""What the auditor hands in: an adapter weights file, a checkpoint directory, or a merged model (a model directory
with config.json and *.safetensors, or one safetensors file whose tensors are named like a model's), read without
trusting it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provenance.basemodel import PICKLE_SUFFIXES
from provenance.errors import UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import CheckpointManifest, FileEntry, hash_directory
from provenance.merge import is_adapter_header
from provenance.safetensors import read_header, read_safetensors_metadata

__all__ = ["ADAPTER_FILE", "Subject", "load_subject", "read_safetensors_metadata"]

ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Subject:
    path: Path
    kind: str  # "adapter" | "checkpoint" | "merged"
    adapter: Path  # a merged model: its first weights file
    # The file's SHA-256; a merged model in several files: the root of a prov.checkpoint.v1 manifest of them
    weights_digest: Digest
    metadata: dict[str, str] = field(default_factory=dict)
    checkpoint_digest: Digest | None = None
    files: tuple[Path, ...] = ()  # a merged model's safetensors files, sorted by name


def load_subject(path: Path) -> Subject:
    """Hash what the auditor holds. A directory is a checkpoint (it holds adapter_model.safetensors) or a merged
    model; a file is adapter weights when it is named adapter_model.safetensors or its tensors are named like a
    PEFT adapter's, else a merged model."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        adapter = path / ADAPTER_FILE
        if adapter.is_file():
            metadata = read_safetensors_metadata(adapter)
            return Subject(path, "checkpoint", adapter, hash_file(adapter), metadata, hash_directory(path).digest())
        return _merged_directory(path)
    header = read_header(path)
    if path.name != ADAPTER_FILE and header.tensors and not is_adapter_header(header):
        return Subject(path, "merged", path, hash_file(path), dict(header.metadata), files=(path,))
    return Subject(path, "adapter", path, hash_file(path), dict(header.metadata))


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
    if len(weights) == 1:
        digest = hash_file(weights[0])
    else:
        digest = CheckpointManifest(tuple(FileEntry(w.name, hash_file(w), w.stat().st_size) for w in weights)).digest()
    return Subject(path, "merged", weights[0], digest, metadata, files=tuple(weights))
