"""What transformers 5.23 reads from a local model directory, read as an adversary would (no torch).

A verdict covers a model only when every file the loader reads is bound by a digest. Read from the installed
sources (`modeling_utils._get_resolved_checkpoint_files`, `configuration_utils`, `tokenization_utils_base`,
`models/auto/*`, `generation/utils.py`), `AutoModelForCausalLM.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)` read:

- `config.json`; in it, keys that make the loader read elsewhere or run other code: `transformers_weights` (a
  weights file or index anywhere inside the directory, sub-folders allowed), `configuration_files` (another
  `config.X.json` chosen by version), `auto_map` (remote code), `quantization_config` (a quantizer reinterprets the
  weights and may load its own modules);
- the weights: `model.safetensors` when present, else `model.safetensors.index.json` and every shard it names
  (`pytorch_model.bin` only when neither exists; a pickle, never accepted here);
- `generation_config.json`; the tokenizer files (`tokenizer.json`, `tokenizer_config.json`,
  `special_tokens_map.json`, `added_tokens.json`, `tokenizer.model`, `vocab.*`, `merges.txt`, `chat_template.*`)
  and every `additional_chat_templates/*.jinja`; in `tokenizer_config.json`, `auto_map` (remote code),
  `fast_tokenizer_files` (another tokenizer file chosen by version) and `tokenizer_file`;
- symbolic links are followed; a `custom_generate/` folder holds code run with `trust_remote_code`.

`loader_problems` names everything in a directory that would make a loader read outside what a digest of its
top-level regular files binds: any sub-folder (hidden ones excepted), links that leave the directory or point at a
folder, the redirecting keys above, and a weights layout other than exactly `model.safetensors` or exactly an
index with the shards it names. Documentation and hidden files are never read (`is_documentation`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError

WEIGHTS_FILE = "model.safetensors"
WEIGHT_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"  # transformers' PEFT integration loads the base it names, then the adapter
# Keys that make transformers read other files or run other code, per file (see the module docstring).
REDIRECT_KEYS = {
    "config.json": {"transformers_weights": "redirects the weights to another file",
                    "configuration_files": "selects another config file by transformers version",
                    "auto_map": "loads remote code", "quantization_config": "quantizes or reinterprets the weights"},
    "tokenizer_config.json": {"auto_map": "loads remote tokenizer code",
                              "fast_tokenizer_files": "selects another tokenizer file by version",
                              "tokenizer_file": "names another tokenizer file"},
    "generation_config.json": {"custom_generate": "loads custom generation code"},
}
DOC_PREFIXES = ("readme", "license", "licence", "notice", "copying", "use_policy", "responsible_use")
DOC_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf")
MAX_CONFIG_BYTES = 16 << 20


def is_documentation(name: str) -> bool:
    """A top-level file no loader reads: hidden files, READMEs, licences, images."""
    lower = name.lower()
    return lower.startswith(".") or lower.startswith(DOC_PREFIXES) or lower.endswith(DOC_SUFFIXES)


def loader_problems(root: Path, *, links: str = "inside") -> list[str]:
    """Why a loader would read outside what a digest of `root`'s top-level regular files binds (empty: nothing).

    `links`: "none" refuses every symbolic link, "inside" only those leaving `root` or pointing at a folder, "any"
    only links to folders (a Hugging Face cache snapshot links every file to a blob outside it; the digest hashes
    the bytes the link leads to, which is what the loader reads)."""
    problems: list[str] = []
    real_root = root.resolve()
    for entry in sorted(root.iterdir()):
        name = entry.name
        if entry.is_symlink():
            target = entry.resolve()
            if links == "none":
                problems.append(f"{name} is a symbolic link (to {os.readlink(entry)}); replace it with the file")
                continue
            if target.is_dir():
                problems.append(f"{name} is a symbolic link to a folder, which loaders may read")
                continue
            if links == "inside" and real_root not in target.parents:
                problems.append(f"{name} is a symbolic link leaving the directory (to {os.readlink(entry)})")
                continue
        if entry.is_dir():
            if not name.startswith("."):
                problems.append(f"{name}/ is a sub-folder, which loaders may read (additional_chat_templates/, "
                                "custom_generate/, or where a config key points); move it out")
            continue
        if not entry.is_file():
            problems.append(f"{name} is not a regular file")
    # a weights file counts whatever its name: one named like documentation or hidden (README.safetensors,
    # .x.safetensors) is never loaded, yet a digest over the directory's weights would hash it as the model's
    names = {p.name for p in root.iterdir()
             if p.is_file() and (not is_documentation(p.name) or p.name.endswith(".safetensors"))}
    if ADAPTER_CONFIG in names:
        problems.append(f"{ADAPTER_CONFIG}: with PEFT installed, transformers loads the model it names and applies "
                        "an adapter instead")
    for file_name, keys in sorted(REDIRECT_KEYS.items()):
        if file_name in names:
            problems.extend(_redirects(root / file_name, keys))
    problems.extend(weights_layout_problems(root, names))
    return problems


def _redirects(path: Path, keys: dict[str, str]) -> list[str]:
    doc = read_json(path)
    if not isinstance(doc, dict):
        return [f"{path.name} is not a JSON object"]
    return [f"{path.name} sets {key!r} ({why})" for key, why in sorted(keys.items())
            if key in doc and doc[key] not in (None, {}, [], "")]


def read_json(path: Path) -> Any:
    """A model directory's JSON file, parsed with the untrusted-input rules (bounded size, no duplicate keys)."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size  # read(n) would allocate n bytes up front
            if size > MAX_CONFIG_BYTES:
                raise FormatError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
            data = handle.read(size + 1)
    except OSError as exc:
        raise FormatError(f"{path}: unreadable ({exc.strerror or exc})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise FormatError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    return canonical.load_json(data, source=str(path))


def weights_layout_problems(root: Path, names: set[str]) -> list[str]:
    """Exactly one of `model.safetensors` (and no other safetensors file) or an index naming every other
    safetensors file at the top level: otherwise what transformers loads differs from what the digest covers."""
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    has_single, has_index = WEIGHTS_FILE in names, WEIGHT_INDEX in names
    if has_single and has_index:
        return [f"both {WEIGHTS_FILE} and {WEIGHT_INDEX}: transformers loads {WEIGHTS_FILE} and ignores the index"]
    if has_single:
        others = [n for n in weights if n != WEIGHTS_FILE]
        return [f"{', '.join(others)} beside {WEIGHTS_FILE}: never loaded, yet hashed as the model's"] if others else []
    if not has_index:
        return [f"neither {WEIGHTS_FILE} nor {WEIGHT_INDEX}: transformers would look for pytorch_model.bin (a "
                "pickle) instead of these safetensors files"] if weights else []
    index = read_json(root / WEIGHT_INDEX)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        return [f"{WEIGHT_INDEX} has no weight_map of file names"]
    shards = sorted(set(weight_map.values()))
    outside = [s for s in shards if s not in names or "/" in s or "\\" in s or not s.endswith(".safetensors")]
    if outside:
        return [f"{WEIGHT_INDEX}: shard {outside[0]!r} is not a safetensors file at the top of the directory"]
    unnamed = [n for n in weights if n not in shards]
    return [f"{', '.join(unnamed)} not named in {WEIGHT_INDEX}: never loaded, yet hashed as the model's"] if unnamed \
        else []
