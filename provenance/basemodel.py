"""Which files of a local Hugging Face model directory make up the base model, and their digest (no torch).

The base-model digest covers the weights, the config and the tokenizer: every top-level file named in
`MODEL_FILES`/`TOKENIZER_FILES` or ending in `.safetensors`, hashed into a `prov.checkpoint.v1` manifest whose root
(`provenance.manifest.checkpoint_digest`) is the digest. A symbolic link counts as the file it points to (a Hugging
Face cache snapshot is all links), so the digest always covers the bytes the loader reads.

`check_model_dir` also refuses what makes transformers read outside those files (`provenance.loaders`): config keys
that redirect the weights or the config (`transformers_weights`, `configuration_files`), remote code (`auto_map`),
`quantization_config`, tokenizer redirects, sub-folders (chat templates and custom code live there), links to
folders, and a weights layout where the loaded files differ from the hashed ones.

Everything the loader could read must be in the digest, so `check_model_dir` refuses a directory with a top-level
file that is neither covered nor known to be ignored when a safetensors causal LM and its tokenizer are loaded
(documentation, hidden files, and other weight formats, which `use_safetensors=True` never opens): a digest that
left out a vocabulary file, or an `adapter_config.json` that makes transformers load another model, would let two
different models share one digest. The shards named in `model.safetensors.index.json` must be top-level files.

Pickled weights (`*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.pkl`) are never loaded: a directory whose weights exist
only in such a format is refused with a one-line error saying to convert them to safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError, UsageError, one_line
from provenance.hashing import hash_file
from provenance.loaders import loader_problems
from provenance.manifest import CheckpointManifest, FileEntry

MODEL_FILES = frozenset({"config.json", "generation_config.json", "model.safetensors.index.json"})
TOKENIZER_FILES = frozenset({
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Top-level files a safetensors causal-LM load never reads: documentation, and weights in other formats.
IGNORED_PREFIXES = ("readme", "license", "licence", "notice", "copying", "use_policy", "responsible_use")
IGNORED_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf", *PICKLE_SUFFIXES, ".h5", ".msgpack",
                    ".onnx", ".gguf", ".ot", ".bin.index.json", ".msgpack.index.json", ".h5.index.json")
WEIGHT_INDEX = "model.safetensors.index.json"


def check_model_dir(directory: str | os.PathLike[str], *, configs: bool = True) -> Path:
    """Refuse what is not a loadable safetensors model directory, naming the problem. `configs=False` checks the
    file names only, parsing no config.json/tokenizer_config.json: the verifier parses them only once the
    directory has the registered digest (#22: a hostile config must not be read before it is known to be the
    run's), then calls this again with `configs=True`."""
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
    if "adapter_config.json" in names:
        raise UsageError(f"{root}: holds adapter_config.json, so it is a PEFT adapter and transformers would load "
                         "the model it names instead; pass the base model's own directory")
    unknown = sorted(n for n in names if not _covered(n) and not _ignored(n))
    if unknown:
        raise UsageError(f"{root}: {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} would not be covered "
                         "by the base-model digest but may be read when loading; move such files out of the "
                         "directory")
    if not configs:
        return root
    try:
        problems = loader_problems(root, links="any")
    except FormatError as exc:
        raise UsageError(f"{root}: {exc}") from None
    if problems:
        raise UsageError(f"{root}: a loader would read outside the base-model digest: {'; '.join(problems[:3])}"
                         f"{' ...' if len(problems) > 3 else ''} (docs/verifier.md, \"What a verdict covers\")")
    return root


def _covered(name: str) -> bool:
    return name in MODEL_FILES or name in TOKENIZER_FILES or name.endswith(".safetensors")


def _ignored(name: str) -> bool:
    lower = name.lower()
    return lower.startswith(".") or lower.startswith(IGNORED_PREFIXES) or lower.endswith(IGNORED_SUFFIXES)


def model_file_names(directory: Path) -> list[str]:
    """The top-level files the base-model digest covers (symbolic links count as what they point to)."""
    return [p.name for p in sorted(directory.iterdir()) if p.is_file() and _covered(p.name)]


def base_model_manifest(directory: str | os.PathLike[str], *, configs: bool = True) -> CheckpointManifest:
    """The manifest of the files the base-model digest covers (`configs=False`: without parsing any config; see
    `check_model_dir`)."""
    root = check_model_dir(directory, configs=configs)
    entries = [FileEntry(n, hash_file(root / n), (root / n).stat().st_size) for n in model_file_names(root)]
    if not any(e.path == "config.json" for e in entries) or not any(e.path.endswith(".safetensors")
                                                                    for e in entries):
        raise UsageError(f"{root}: the base-model digest would cover no config or weights; pass a model directory")
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
        raise UsageError(f"{root}: cannot load its tokenizer: {one_line(exc, 300)}") from None
