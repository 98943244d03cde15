"""The merged-model directory manifest (`prov.merged-dir.v1`): what a run's finalisation commits since #20.

A merged model is loaded as a directory: transformers reads its weights *and* `config.json`, the tokenizer files
and `generation_config.json` (`provenance.loaders`), and each decides what the model computes. The finalisation
therefore commits, in its 32-byte slot, the SHA-256 of this canonical JSON document instead of the tensor digest
alone (the older `prov.merge.v1` finalisation, still verified at the tensor level):

    {"files": [{"digest", "path", "size"} of every other file a loader reads, sorted by path],
     "format": "prov.merged-dir.v1", "recipe": "prov.merge.v1", "tensors": "sha256:<prov.tensors.v1 digest>"}

The weights are bound by their tensor digest, which does not depend on how they are split into files (one file or
shards with an index: `provenance.loaders` refuses a layout where the loaded files differ from the hashed ones), so
a re-sharded `prov merge` output verifies too. Every other top-level file except documentation and this document
itself is listed: an extra file, a changed tokenizer or config gives another digest. `prov merge` writes the
document beside the weights as `prov-merged.json`, so a verifier can name which file differs from the committed one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError
from provenance.hashing import Digest, hash_file
from provenance.loaders import WEIGHT_INDEX, is_documentation
from provenance.manifest import FileEntry

DIR_FORMAT = "prov.merged-dir.v1"
MANIFEST_FILE = "prov-merged.json"
MAX_MANIFEST_BYTES = 1 << 20
RECIPE = "prov.merge.v1"


def is_weights_file(name: str) -> bool:
    """Files bound through the tensor digest rather than by their bytes."""
    return name.endswith(".safetensors") or name == WEIGHT_INDEX


def bound_names(directory: Path) -> list[str]:
    """The top-level files of a merged directory the manifest lists (not weights, documentation or itself)."""
    return sorted(p.name for p in directory.iterdir()
                  if p.is_file() and not is_weights_file(p.name) and not is_documentation(p.name)
                  and p.name != MANIFEST_FILE)


@dataclass(frozen=True)
class MergedDirManifest:
    tensors: Digest
    files: tuple[FileEntry, ...]  # sorted by path
    recipe: str = RECIPE

    def to_json(self) -> dict[str, Any]:
        return {"files": [{"digest": str(f.digest), "path": f.path, "size": f.size} for f in self.files],
                "format": DIR_FORMAT, "recipe": self.recipe, "tensors": str(self.tensors)}

    def encode(self) -> bytes:
        return canonical.encode(self.to_json())

    def digest(self) -> Digest:
        """What the finalisation commits: SHA-256 of the canonical document."""
        return Digest.of(self.encode())

    def file(self, name: str) -> FileEntry | None:
        return next((f for f in self.files if f.path == name), None)


def build(tensors: Digest, entries: Iterable[FileEntry]) -> MergedDirManifest:
    files = tuple(sorted(entries, key=lambda e: e.path))
    if len({f.path for f in files}) != len(files):
        raise FormatError("merged-directory manifest: a file is listed twice")
    return MergedDirManifest(tensors, files)


def of_directory(directory: Path, tensors: Digest) -> MergedDirManifest:
    """The manifest a merged directory holding tensors `tensors` has (symbolic links count as what they point to;
    `provenance.loaders` refuses them in a merged directory anyway)."""
    return build(tensors, (FileEntry(n, hash_file(directory / n), (directory / n).stat().st_size)
                           for n in bound_names(directory)))


def of_base(base_files: Iterable[FileEntry], tensors: Digest) -> MergedDirManifest:
    """The manifest of the directory `prov merge` writes from a base model whose digest covers `base_files`: the
    base's files other than weights, copied unchanged."""
    return build(tensors, (e for e in base_files if not is_weights_file(e.path) and not is_documentation(e.path)))


def parse(data: bytes, *, source: str) -> MergedDirManifest:
    """A `prov.merged-dir.v1` document (untrusted: every field checked)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{source}: larger than {MAX_MANIFEST_BYTES} bytes")
    doc = canonical.load_json(data, source=source)
    if not isinstance(doc, dict) or doc.get("format") != DIR_FORMAT:
        raise FormatError(f"{source}: not a {DIR_FORMAT} document")
    if doc.get("recipe") != RECIPE or set(doc) != {"files", "format", "recipe", "tensors"}:
        raise FormatError(f"{source}: unknown recipe or fields in a {DIR_FORMAT} document")
    files = doc["files"]
    if not isinstance(files, list):
        raise FormatError(f"{source}: files is not a list")
    entries = []
    for item in files:
        if (not isinstance(item, dict) or set(item) != {"digest", "path", "size"} or not isinstance(item["path"], str)
                or "/" in item["path"] or item["path"] in ("", ".", "..") or not canonical.is_count(item["size"])):
            raise FormatError(f"{source}: malformed file entry {str(item)[:80]}")
        entries.append(FileEntry(item["path"], Digest.parse(str(item["digest"])), item["size"]))
    manifest = build(Digest.parse(str(doc["tensors"])), entries)
    if manifest.encode() != data:
        raise FormatError(f"{source}: not in canonical form (its digest would not be the committed one)")
    return manifest


def read_beside(directory: Path) -> tuple[MergedDirManifest, Digest] | None:
    """The `prov-merged.json` a merged directory carries (untrusted until its digest is found on chain), and the
    SHA-256 of its bytes; None when absent or not such a document."""
    path = directory / MANIFEST_FILE
    if not path.is_file() or path.is_symlink():
        return None
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size > MAX_MANIFEST_BYTES:
                return None
            data = handle.read(MAX_MANIFEST_BYTES + 1)  # bounded: the size was checked
        return parse(data, source=str(path)), Digest.of(data)
    except (OSError, FormatError):
        return None


def write(directory: Path, manifest: MergedDirManifest) -> None:
    (directory / MANIFEST_FILE).write_bytes(manifest.encode())


def differences(committed: MergedDirManifest, here: MergedDirManifest) -> list[str]:
    """What differs between the committed manifest and the directory's, file by file (empty: the same)."""
    out = []
    if committed.tensors != here.tensors:
        out.append(f"the weights (tensors {here.tensors}, committed {committed.tensors})")
    names = sorted({f.path for f in committed.files} | {f.path for f in here.files})
    for name in names:
        a, b = committed.file(name), here.file(name)
        if a is None:
            out.append(f"{name} (not committed: an extra file a loader may read)")
        elif b is None:
            out.append(f"{name} (committed, missing here: the loader falls back to other settings)")
        elif a.digest != b.digest:
            out.append(f"{name} (changed: {b.digest}, committed {a.digest})")
    return out
