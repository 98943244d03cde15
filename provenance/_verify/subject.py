"""What the auditor hands in: an adapter weights file or a checkpoint directory, read without trusting it."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from provenance.errors import FormatError, UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import hash_directory

ADAPTER_FILE = "adapter_model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024
_PICKLE_HINT = ("prov reads safetensors only and never unpickles a file; convert it with "
                "safetensors (e.g. `save_file(state_dict, 'adapter_model.safetensors')`) in a trusted environment")


@dataclass(frozen=True)
class Subject:
    path: Path
    kind: str  # "adapter" | "checkpoint"
    adapter: Path
    weights_digest: Digest
    metadata: dict[str, str] = field(default_factory=dict)
    checkpoint_digest: Digest | None = None


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file, checking the header is well formed (the tensors are not loaded)."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
            size = path.stat().st_size
            if head[:1] == b"\x80" or head[:4] == b"PK\x03\x04":
                raise FormatError(f"{path}: a pickle / PyTorch .bin file, not safetensors; {_PICKLE_HINT}")
            if len(head) < 8:
                raise FormatError(f"{path}: too short to be a safetensors file ({size} bytes)")
            (length,) = struct.unpack("<Q", head)
            if length > _MAX_HEADER or 8 + length > size:
                raise FormatError(f"{path}: not a safetensors file, or truncated (header of {length} bytes "
                                  f"in a {size}-byte file)")
            header = json.loads(f.read(length).decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FormatError(f"{path}: not a safetensors file (its header is not JSON); {_PICKLE_HINT}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: not a safetensors file (header is not an object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise FormatError(f"{path}: safetensors entry {name!r} has no valid data_offsets")
        end = max(end, offsets[1])
    if 8 + length + end > size:
        raise FormatError(f"{path}: truncated safetensors file (its tensors need {8 + length + end} bytes, "
                          f"the file has {size})")
    metadata = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}


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
