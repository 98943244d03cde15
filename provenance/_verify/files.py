"""Which files a loader reads from what the auditor holds, and whether each is the committed checkpoint's.

PEFT 0.21.2 loading an adapter directory (`PeftModel.from_pretrained(base, DIR)`,
`AutoPeftModelForCausalLM.from_pretrained(DIR)`) reads: `adapter_config.json` (every LoRA setting, the base model
it names, `task_type`, `auto_mapping`, `revision`), `adapter_model.safetensors` — or, when that is absent,
`adapter_model.bin` through `torch.load` — and, for the Auto class, when `tokenizer_config.json` is present, the
tokenizer of DIR (tokenizer files, and `config.json` when the tokenizer config names no class), growing the base
model's embeddings to a larger vocabulary. `subfolder=` reads the same names in a sub-directory, which is also how
several adapters are saved together. The rule (docs/verifier.md, "What a verdict covers"): in a directory, every
regular file is either the committed checkpoint's file of that name with its committed digest, the checkpoint's own
manifest, or a file no loader reads (`UNREAD`); anything else — any other file, a sub-directory, a special file — is
refused with a failed `checkpoint` check. Nothing is ignored silently: unread files are listed in the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from provenance import canonical
from provenance._verify.checks import CheckFailed
from provenance.errors import FormatError, one_line
from provenance.hashing import Digest
from provenance.manifest import ADAPTER_FORMAT, MANIFEST_NAME, CheckpointManifest, FileEntry

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
PICKLED_ADAPTER = "adapter_model.bin"
# Files of a checkpoint directory the trainer writes besides the adapter and its config (their presence marks a
# trainer's checkpoint directory rather than a shipped adapter).
CHECKPOINT_MARKERS = frozenset({MANIFEST_NAME, "state.json", "steps.jsonl", "optimizer.safetensors"})
# Names no supported loader (PEFT, transformers' Auto classes) ever opens: model cards, licences, hidden files and
# directories (.gitattributes, .git/, huggingface_hub's .cache/, a desktop's .DS_Store).
UNREAD_PREFIXES = ("readme", "license", "licence", "notice", "copying")
# Read from an adapter directory by AutoPeftModelForCausalLM (the tokenizer, when tokenizer_config.json is there).
TOKENIZER_READS = frozenset({
    "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json", "added_tokens.json", "tokenizer.model",
    "spiece.model", "vocab.json", "vocab.txt", "merges.txt", "chat_template.jinja", "chat_template.json",
    "config.json",
})


def is_unread(name: str) -> bool:
    """A file name no supported loader opens (documentation, licences, git files)."""
    lower = name.lower()
    return name.startswith(".") or lower.startswith(UNREAD_PREFIXES) or lower.endswith(".md")


@dataclass(frozen=True)
class FileSet:
    """What a directory (or the directory around a lone adapter file) holds, as the subject reads it."""

    entries: tuple[FileEntry, ...] = ()  # regular files (links followed) a loader may read, hashed
    unread: tuple[str, ...] = ()  # present, read by no supported loader: listed, not bound
    refused: tuple[str, ...] = ()  # present and unbindable (sub-directories, special files, broken links): why
    complete: bool = False  # a trainer's checkpoint directory: every committed file must be present
    lone: bool = False  # a lone adapter file: only its adapter_config.json companion is bound
    beside: tuple[str, ...] = ()  # a lone file: other loader-read files beside it, not bound
    manifest: bytes | None = None  # the directory's prov-checkpoint.json, when it has one

    def names(self) -> set[str]:
        return {e.path for e in self.entries}


def check_files(files: FileSet, committed: CheckpointManifest, *, checkpoint_digest: Digest) -> tuple[str, list[str]]:
    """Each file a loader reads is the committed checkpoint's file of that name, with its digest; CheckFailed naming
    the first that is not. Returns a summary suffix and warnings (unread and unbound files, listed)."""
    if files.refused:
        raise CheckFailed(f"{files.refused[0]}; no commitment binds it, and a loader may read it",
                          expected="only the committed checkpoint's files (and files no loader reads)",
                          found="; ".join(files.refused))
    by_name = {e.path: e for e in committed.files}
    for entry in files.entries:
        if entry.path == MANIFEST_NAME:
            _check_manifest_file(files.manifest or b"", checkpoint_digest)
            continue
        if entry.path == ADAPTER_FILE:  # compared by the caller: the committed bytes or the same tensors re-encoded
            continue
        want = by_name.get(entry.path)
        if want is None:
            raise CheckFailed(_unbound_text(entry.path), expected=f"one of {', '.join(sorted(by_name))}",
                              found=entry.path)
        if want.digest != entry.digest:
            where = "beside this file " if files.lone else ""
            raise CheckFailed(f"{entry.path} {where}is not the committed checkpoint's {entry.path}"
                              + (" (PEFT loading this directory would use other settings)"
                                 if entry.path == ADAPTER_CONFIG else ""),
                              expected=want.digest, found=entry.digest)
    present = files.names()
    if files.complete:
        missing = sorted(set(by_name) - present)
        if missing:
            raise CheckFailed(f"this checkpoint directory lacks {', '.join(missing)}, which the committed checkpoint "
                              "holds", expected=", ".join(sorted(by_name)), found=", ".join(sorted(present)))
    warnings = []
    if files.unread:
        warnings.append(f"not bound by any commitment, and read by no supported loader: {', '.join(files.unread)}")
    if files.beside:
        warnings.append(f"beside this file, {', '.join(files.beside)} would be read by AutoPeftModelForCausalLM "
                        "loading its directory and are not bound: verify the directory to bind them")
    bound = sorted(present - {MANIFEST_NAME})
    if files.lone:
        return ("; the adapter_config.json beside it is the committed one" if ADAPTER_CONFIG in present else
                "; no adapter_config.json beside it (its LoRA settings are not bound here)"), warnings
    return f"; every file a loader reads here is the committed one ({', '.join(bound)})", warnings


def _check_manifest_file(data: bytes, checkpoint_digest: Digest) -> None:
    """A prov-checkpoint.json here must describe the committed checkpoint (prov's own resume reads it)."""
    try:
        found = CheckpointManifest.decode(data, source=MANIFEST_NAME).digest()
    except FormatError as exc:
        raise CheckFailed(f"{MANIFEST_NAME} here does not parse ({one_line(exc, 160)})",
                          expected=checkpoint_digest, found="an unreadable manifest") from None
    if found != checkpoint_digest:
        raise CheckFailed(f"{MANIFEST_NAME} here describes another checkpoint than the committed one",
                          expected=checkpoint_digest, found=found)


def _unbound_text(name: str) -> str:
    if name == PICKLED_ADAPTER or name.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")):
        return (f"{name} is a pickle (PEFT loads adapter_model.bin with torch.load when the safetensors file is "
                "absent) that the committed checkpoint does not hold")
    if name in TOKENIZER_READS:
        return (f"{name} is read by AutoPeftModelForCausalLM (the tokenizer, which can grow the model's "
                "embeddings) and the committed checkpoint does not hold it")
    return f"{name} is not a file of the committed checkpoint, and a loader may read it"


def check_base_name(config: bytes, manifest: Mapping[str, Any] | None) -> str | None:
    """The committed adapter_config.json's `base_model_name_or_path` is where AutoPeftModelForCausalLM loads the base
    model from, a name, not a digest: in a `prov.adapter.v2` run it must be the base model's name the manifest
    records (else CheckFailed: the config redirects the loader elsewhere). Returns a warning saying that the name
    is not the base model's digest (None for v1 runs, whose config names the digest and no loadable base)."""
    if manifest is None:
        return None
    formats = manifest.get("formats")
    if not isinstance(formats, dict) or formats.get("adapter") != ADAPTER_FORMAT:
        return None
    base = manifest.get("base_model")
    want = base.get("name") if isinstance(base, dict) else None
    try:
        found = canonical.load_json(config, source=ADAPTER_CONFIG)
    except (ValueError, FormatError) as exc:
        raise CheckFailed(f"the committed {ADAPTER_CONFIG} does not parse ({one_line(exc, 160)})",
                          expected="a JSON object", found="unreadable") from None
    name = found.get("base_model_name_or_path") if isinstance(found, dict) else None
    if not isinstance(want, str) or name != want:
        raise CheckFailed(f"the committed {ADAPTER_CONFIG} sends AutoPeftModelForCausalLM to another base model than "
                          "the run manifest names", expected=want, found=name)
    return (f"AutoPeftModelForCausalLM loads the base model named {name!r} (a name, not a digest): load the base model "
            "that --base-model verified against the registered digest")


def check_lora_settings(config: bytes, manifest: Mapping[str, Any] | None) -> None:
    """The committed adapter_config.json is the plain LoRA the run manifest records (`training.lora`: r, alpha,
    target modules) and nothing PEFT would compute differently with (rsLoRA, DoRA, rank or alpha patterns, biases,
    modules to save, …: the settings `prov.merge.v1` refuses), so the config a loader reads from the committed
    checkpoint is the run's at every level, not only where replay rebuilds it. CheckFailed naming the setting."""
    from provenance.errors import UsageError
    from provenance.merge import read_adapter_config

    training = (manifest or {}).get("training")
    lora = training.get("lora") if isinstance(training, dict) else None
    if not isinstance(lora, dict):
        return
    try:
        doc = canonical.load_json(config, source=f"the committed {ADAPTER_CONFIG}")
        read_adapter_config(doc)
    except UsageError as exc:  # merge.AdapterError: a setting plain LoRA does not have
        raise CheckFailed(f"the committed {ADAPTER_CONFIG} is not the plain LoRA the trainer writes: "
                          f"{one_line(exc, 200)}", expected="plain LoRA",
                          found="another adapter") from None
    except (ValueError, FormatError) as exc:
        raise CheckFailed(f"the committed {ADAPTER_CONFIG} does not parse ({one_line(exc, 160)})",
                          expected="a JSON object", found="unreadable") from None
    targets = doc.get("target_modules")
    pairs = (("r", doc.get("r"), lora.get("r")), ("lora_alpha", doc.get("lora_alpha"), lora.get("alpha")),
             ("target_modules", sorted(targets) if isinstance(targets, list) else targets,
              sorted(lora.get("target_modules") or [])))
    for name, found, want in pairs:
        if found != want:
            raise CheckFailed(f"the committed {ADAPTER_CONFIG} has another {name} than the run manifest records "
                              "(PEFT would load a different adapter)", expected=want, found=found)
