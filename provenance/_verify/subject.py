"""What the auditor hands in: an adapter weights file or a checkpoint directory, read without trusting it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from provenance.errors import UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import hash_directory
from provenance.safetensors import read_safetensors_metadata

__all__ = ["ADAPTER_FILE", "Subject", "load_subject", "read_safetensors_metadata"]

ADAPTER_FILE = "adapter_model.safetensors"


@dataclass(frozen=True)
class Subject:
    path: Path
    kind: str  # "adapter" | "checkpoint"
    adapter: Path
    weights_digest: Digest
    metadata: dict[str, str] = field(default_factory=dict)
    checkpoint_digest: Digest | None = None


def load_subject(path: Path) -> Subject:
    """Hash what the auditor holds. A directory is a checkpoint; a file is the adapter weights."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or directory")
    if path.is_dir():
        adapter = path / ADAPTER_FILE
        if not adapter.is_file():
            raise UsageError(f"{path}: a checkpoint directory must contain {ADAPTER_FILE}")
        metadata = read_safetensors_metadata(adapter)
        return Subject(path, "checkpoint", adapter, hash_file(adapter), metadata, hash_directory(path).digest())
    metadata = read_safetensors_metadata(path)
    return Subject(path, "adapter", path, hash_file(path), metadata)
