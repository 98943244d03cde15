"""The `merged_files` check: every file transformers reads from a merged model directory is bound (#20).

Nothing may redirect the loader (`provenance.loaders`), and the files beside the weights must be those the run's
finalisation committed (`prov.merged-dir.v1`, byte for byte) and, with `--base-model`, the registered base model's.
Against the base model a copy converted with `save_pretrained` (float16, bfloat16, re-sharded) may differ only where
the conversion must: `config.json` naming the dtype its weights now have, and the `transformers_version` stamps; a
copy without any tokenizer file is allowed (AutoTokenizer then fails loudly instead of computing something else),
and the report says so. Any other difference is FAILED, naming the file.
"""

from __future__ import annotations

from pathlib import Path

from provenance import mergedir
from provenance._verify.checks import CheckFailed, Status
from provenance._verify.pipeline import Evidence
from provenance.basemodel import TOKENIZER_FILES, base_model_manifest
from provenance.canonical import short_repr
from provenance.loaders import loader_problems, read_json
from provenance.safetensors import read_header

FILES_CHECK = "merged_files"
DTYPE_KEYS = ("dtype", "torch_dtype")
STAMP_KEYS = ("transformers_version",)
DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def stage_files(ev: Evidence, base_model: Path | None) -> None:
    """Run `merged_files` (see the module docstring). A run finalised with the tensors alone binds the other files
    only through --base-model; without it the check is inconclusive (the files are not bound), never passed."""
    checks, case = ev.checks, ev.merged
    if case.here is None:
        checks.not_run(FILES_CHECK, "a lone weights file: the config, tokenizer and generation files a loader reads "
                                    "beside it are not bound (verify the model directory people load)")
        ev.notes.append("the config, tokenizer and generation files loaded with this weights file: verify the "
                        "model directory instead")
        return
    if checks.status("record") is not Status.PASSED:
        checks.not_run(FILES_CHECK, checks.why_missing("record", "the on-chain record"))
        return
    with checks.run(FILES_CHECK):
        problems = loader_problems(ev.subject.path, links="none")
        if problems:
            raise CheckFailed(f"a loader would read what no commitment binds: {problems[0]}",
                              expected="only the committed files, nothing redirecting the loader",
                              found="; ".join(problems[:4]))
        formats = (ev.manifest or {}).get("formats")
        promised = formats.get("merged") if isinstance(formats, dict) else None
        if case.finalization is not None and case.committed_files is None and promised == mergedir.DIR_FORMAT:
            # a downgrade: the run declares that its finalisation binds every file, then commits the tensors alone
            raise CheckFailed(f"the run manifest declares {mergedir.DIR_FORMAT} finalisations (formats.merged), but "
                              "the run's finalisation commits the merged tensors alone: the files a loader reads "
                              "beside them are not bound as the run promised", expected=mergedir.DIR_FORMAT,
                              found="a tensors-only finalisation (prov.merge.v1)")
        compared = []
        if case.committed_files is not None:
            _fail_on(mergedir.differences(case.committed_files, case.here), "those committed at the run's finalisation")
            compared.append("are those committed at the run's finalisation (prov.merged-dir.v1)")
        if base_model is not None and checks.ok("base_model"):
            failures, tolerated = base_differences(base_model, ev.subject.path, case.here, ev.subject.files)
            _fail_on(failures, "the registered base model's")
            compared.append("equal the registered base model's" + (f" ({'; '.join(tolerated)})" if tolerated else ""))
            ev.warnings.extend(f"merged model files: {t}" for t in tolerated if "absent" in t)
        names = ", ".join(f.path for f in case.here.files) or "none"
        if compared:
            checks.passed(FILES_CHECK, f"nothing redirects the loader, and the files beside the weights ({names}) "
                                       + " and ".join(compared))
            return
        # Never VERIFIED with files a loader reads unbound: whatever the manifest says of itself (a current run
        # can write its manifest without `formats.merged`), the base model's files are then the only binding.
        checks.inconclusive(FILES_CHECK, "the run's finalisation commits the merged tensors only (prov.merge.v1, "
                                         f"before prov.merged-dir.v1): the files a loader reads beside them ({names}) "
                                         "are not bound by any commitment; pass --base-model to compare them with "
                                         "the registered base model's")


def _fail_on(differences: list[str], whose: str) -> None:
    diff = [d for d in differences if not d.startswith("the weights")]  # the tensors are the record's and merge's
    if diff:
        more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
        raise CheckFailed(f"a file a loader reads differs from {whose}: {diff[0]}{more}",
                          expected=f"the same files as {whose}", found="; ".join(diff[:4]))


def base_differences(base_model: Path, directory: Path, here: mergedir.MergedDirManifest,
                     weights: tuple[Path, ...]) -> tuple[list[str], list[str]]:
    """(differences from the base model's files that change what a loader computes, tolerated ones)."""
    expected = mergedir.of_base(base_model_manifest(base_model).files, here.tensors)
    has_tokenizer = any(f.path in TOKENIZER_FILES for f in here.files)
    failures, tolerated = [], []
    for line in mergedir.differences(expected, here):
        name = line.split(" (", 1)[0]
        if line.startswith("the weights"):
            continue
        if name in TOKENIZER_FILES and "missing here" in line and not has_tokenizer:
            tolerated.append(f"{name} absent (no tokenizer in the directory: AutoTokenizer cannot load it from here)")
            continue
        if name in ("config.json", "generation_config.json") and "(changed" in line:
            why = _json_difference(base_model / name, directory / name,
                                   dtype=_weights_dtype(weights) if name == "config.json" else None)
            if why is None:
                tolerated.append(f"{name} differs only in {', '.join((*DTYPE_KEYS, *STAMP_KEYS))} as a conversion "
                                 "to these weights' dtype writes them")
                continue
            line = f"{name} ({why})"
        failures.append(line)
    return failures, tolerated


def _json_difference(base: Path, given: Path, *, dtype: str | None) -> str | None:
    """The first key whose value differs beyond what a dtype conversion writes, or None."""
    a, b = read_json(base), read_json(given)
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "not a JSON object"
    for key in STAMP_KEYS:
        a.pop(key, None), b.pop(key, None)
    for key in DTYPE_KEYS:
        if a.get(key) != b.get(key) and dtype is not None and b.get(key) in (dtype, None):
            a.pop(key, None), b.pop(key, None)
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{key}: {short_repr(b.get(key))}, the base model's {short_repr(a.get(key))}"
    return None


def _weights_dtype(weights: tuple[Path, ...]) -> str | None:
    """The one floating-point dtype of every floating tensor of the model (None when mixed)."""
    found = {t.dtype for path in weights for t in read_header(path).tensors if t.dtype in DTYPE_NAMES}
    return DTYPE_NAMES[found.pop()] if len(found) == 1 else None
