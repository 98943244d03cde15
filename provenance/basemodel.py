"""Which files of a local Hugging Face model directory make up the base model, and their digest (no torch).

The base-model digest covers the weights, the config and the tokenizer: every top-level regular file named in
`MODEL_FILES`/`TOKENIZER_FILES` or ending in `.safetensors`, hashed into a `prov.checkpoint.v1` manifest whose root
(`provenance.manifest.checkpoint_digest`) is the digest. Other files (README, .git, pickles) are not part of it.

Pickled weights (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`) are never loaded: a directory whose weights exist
only in such a format is refused with a one-line error saying to convert them to safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import UsageError
from provenance.hashing import hash_file
from provenance.manifest import CheckpointManifest, FileEntry

MODEL_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors.index.json"})
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def check_model_dir(directory: str | os.PathLike[str]) -> Path:
    """Refuse what is not a loadable safetensors model directory, naming the problem."""
    root = Path(directory)
    if not root.exists():
        raise UsageError(f"{root}: model directory not found (run `prov init-model --tiny {root}` for a demo model)")
    if not root.is_dir():
        raise UsageError(f"{root}: not a directory; pass a local Hugging Face model directory")
    if not (root / "config.json").is_file():
        raise UsageError(f"{root}: not a Hugging Face model directory (no config.json)")
    names = {p.name for p in root.iterdir() if p.is_file()}
    if not any(n.endswith(".safetensors") for n in names):
        if any(n.endswith(PICKLE_SUFFIXES) for n in names):
            raise UsageError(
                f"{root}: weights are only in a pickle format (.bin/.pt); prov loads safetensors only "
                "(convert with `model.save_pretrained(dir, safe_serialization=True)`)"
            )
        raise UsageError(f"{root}: no *.safetensors weights found")
    if "tokenizer.json" not in names and "tokenizer.model" not in names and "vocab.json" not in names:
        raise UsageError(f"{root}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    return root


def model_file_names(directory: Path) -> list[str]:
    names = []
    for p in sorted(directory.iterdir()):
        if p.is_symlink() or not p.is_file():
            continue
        if p.name in MODEL_FILES or p.name in TOKENIZER_FILES or p.name.endswith(".safetensors"):
            names.append(p.name)
    return names


def base_model_manifest(directory: str | os.PathLike[str]) -> CheckpointManifest:
    """The manifest of the files the base-model digest covers."""
    root = check_model_dir(directory)
    entries = [FileEntry(n, hash_file(root / n), (root / n).stat().st_size) for n in model_file_names(root)]
    return CheckpointManifest(tuple(entries))


def architecture_of(directory: str | os.PathLike[str]) -> str:
    """The model class named in config.json (`architectures[0]`), or its `model_type`."""
    path = Path(directory) / "config.json"
    try:
        config = canonical.load_json(path.read_bytes(), source=f"{path} (model config)")
    except OSError as exc:
        raise UsageError(f"{path}: unreadable model config ({exc})") from None
    names = config.get("architectures") if isinstance(config, dict) else None
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return str(config.get("model_type", "unknown")) if isinstance(config, dict) else "unknown"


def base_model_summary(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The run manifest's `base_model` section: digest, per-file digests, architecture, directory name."""
    manifest = base_model_manifest(directory)
    return {
        "architecture": architecture_of(directory),
        "digest": str(manifest.digest()),
        "files": manifest.to_json()["files"],
        "name": Path(directory).resolve().name,
    }


def load_tokenizer(directory: str | os.PathLike[str]) -> Any:
    """The base model's tokenizer (Hugging Face `AutoTokenizer`, local files only; needs `transformers`, not
    torch). The verifier tokenizes the data with it to recompute batch commitments."""
    root = check_model_dir(directory)
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise UsageError("tokenizing the data needs transformers (pip install 'prov[train]')") from None
    hf_logging.set_verbosity_error()
    try:
        return AutoTokenizer.from_pretrained(root, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"{root}: cannot load its tokenizer: {' '.join(str(exc).split())[:300]}") from None
