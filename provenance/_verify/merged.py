"""`prov verify` on a merged model: the adapter merged into the base model, as people ship it.

The model's tensor digest (`prov.tensors.v1` over its safetensors files) is looked up among run finalisations
(`RegistryReader.find_merged`): each finalisation that commits it is a claim on its run's last checkpoint, and one is
selected by the same rules as an adapter's claims (`claims.select`: the file's metadata, the manifest's owner). The
lineage of that checkpoint is then verified exactly as for an adapter (its adapter is fetched from the store), and
the `merge` check says how the merged weights relate to it:

- found on chain, no `--base-model`: they are the weights the run's owner committed at finalisation (the merge is
  not recomputed, which `not_checked` says);
- found on chain, `--base-model`: `prov.merge.v1` recomputed from the registered base model and the committed adapter
  must give the committed digest;
- not found, `--base-model` and `--adapter` (a converted or re-sharded copy): the adapter's lineage is verified, the
  merge recomputed, cast to each of the model's tensor dtypes (round to nearest even) and compared bit for bit; any
  difference fails, naming the first tensor and element.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from provenance import mergedir
from provenance._verify import claims as claimsmod
from provenance._verify.checks import CheckFailed
from provenance._verify.mergedfiles import FILES_CHECK, stage_files
from provenance._verify.pipeline import Evidence, adopt_claim, fetch_committed
from provenance._verify.subject import Subject, load_subject
from provenance.basemodel import base_model_manifest
from provenance.errors import ProvenanceError, UsageError
from provenance.hashing import Digest
from provenance.merge import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    FLOAT_DTYPES,
    MERGE_FORMAT,
    AdapterError,
    Merge,
    open_merge,
    round_to_dtype,
    to_float64,
)
from provenance.ports import RegistryReader, StoreReader
from provenance.safetensors import TensorInfo, canonical_header, header_of

MERGE_CHECK = "merge"
__all__ = ["FILES_CHECK", "MERGE_CHECK", "MergedCase", "compare", "prepare", "stage_checkpoint", "stage_files",
           "stage_merge", "stage_record"]
MERGE_TITLE = "Merged weights are the committed adapter merged into the base model"
DTYPE_NAMES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}


@dataclass
class MergedCase:
    """What verifying a merged model adds to the evidence."""

    adapter: Subject | None  # --adapter: the run's adapter a converted copy was merged from
    finalization: Any = None  # the selected run's finalisation committing these merged tensors (found on chain)
    stored: Path | None = None  # the committed checkpoint, fetched from the store
    here: mergedir.MergedDirManifest | None = None  # the directory's own manifest (None: a lone weights file)
    committed_tensors: Digest | None = None  # the merged tensors the selected finalisation commits (either format)
    committed_files: mergedir.MergedDirManifest | None = None  # prov.merged-dir.v1: the files it commits too
    base_model: Path | None = None  # --base-model: also finds a lone weights file's prov.merged-dir.v1 finalisation


def prepare(subject: Subject, *, adapter: Path | None, base_model: Path | None) -> MergedCase | None:
    """The merged model's case (None for an adapter or checkpoint); refuses options that do not fit the subject."""
    if subject.kind != "merged":
        if adapter is not None:
            raise UsageError(f"--adapter is for a merged model; {subject.path} is an adapter or checkpoint itself")
        return None
    if adapter is not None and base_model is None:
        raise UsageError("--adapter needs --base-model: the merge is recomputed from the base model and the adapter")
    if adapter is None:
        return MergedCase(None, base_model=base_model)
    given = load_subject(adapter)
    if given.kind == "merged":
        raise UsageError(f"{adapter}: --adapter takes the run's adapter file (adapter_model.safetensors), not a model")
    return MergedCase(given, base_model=base_model)


def stage_record(ev: Evidence, registry: RegistryReader, store: StoreReader, *, expected_run: bytes | None) -> None:
    """Every run whose finalisation commits these merged tensors (a claim on its last checkpoint), one selected; when
    none does and `--adapter` is given, the claims of that adapter instead (a converted copy)."""
    checks, case = ev.checks, ev.merged
    assert isinstance(case, MergedCase) and ev.tensor_digest is not None
    with checks.run("record"):
        if ev.subject.path.is_dir():
            case.here = mergedir.of_directory(ev.subject.path, ev.tensor_digest)
        # Every lookup's claims are candidates together, so the claim the file's metadata names ranks first: a
        # stranger finalising its own run with this directory's manifest must not take a file committed another way.
        lookups = _lookups(ev, case)
        files_of = dict(lookups)
        found = [claim for committed, _ in lookups for claim in _finalisation_claims(ev, registry, committed)]
        if found:
            summary = adopt_claim(ev, found, registry, store, metadata=ev.subject.metadata, expected_run=expected_run)
            final = ev.history.finalization
            if final is None or final.merged_tensor_digest not in files_of:
                raise CheckFailed("the selected run's finalisation does not commit these merged weights (an "
                                  "inconsistent node)", expected=lookups[0][0],
                                  found=None if final is None else final.merged_tensor_digest)
            committed, files = final.merged_tensor_digest, files_of[final.merged_tensor_digest]
            case.finalization, case.committed_files = final, files
            case.committed_tensors = committed if files is None else files.tensors
            if case.committed_tensors != ev.tensor_digest:
                raise CheckFailed("these merged weights are not the ones the run's finalisation commits (the "
                                  f"directory's {mergedir.MANIFEST_FILE} is committed, its weights are not)",
                                  expected=case.committed_tensors, found=ev.tensor_digest)
            how = ("as tensors only (prov.merge.v1 finalisation: the files beside them are not bound)" if files is None
                   else "with every file a loader reads (prov.merged-dir.v1)" if case.here is not None
                   else "in a prov.merged-dir.v1 manifest (this lone weights file binds only its tensors)")
            checks.passed("record", f"committed at the run's finalisation in block {final.block_number} as the merge "
                                    f"of its last checkpoint, {how}: {summary}")
            return
        if case.adapter is None:
            raise CheckFailed("no run on this registry committed these merged weights at its finalisation (altered, "
                              "converted or re-sharded, or never committed here); for a converted copy pass "
                              "--base-model and --adapter", expected="a finalisation committing these merged tensors",
                              found=ev.tensor_digest)
        from provenance.safetensors import tensor_digest

        adapter = case.adapter
        claims = claimsmod.find(registry, weights=adapter.weights_digest, tensors=tensor_digest(adapter.adapter))
        if not claims:
            raise CheckFailed("no finalisation commits these merged weights, and no checkpoint claims the adapter "
                              "given with --adapter", expected="a checkpoint committing that adapter",
                              found=adapter.weights_digest)
        summary = adopt_claim(ev, claims, registry, store, metadata=adapter.metadata, expected_run=expected_run)
        checks.passed("record", f"no finalisation commits these merged weights (a converted copy?); the adapter "
                                f"given (--adapter) is {summary}")


def _lookups(ev: Evidence, case: MergedCase) -> list[tuple[Digest, mergedir.MergedDirManifest | None]]:
    """What a finalisation may commit for this model, in order: the directory's own manifest (every file bound),
    the `prov-merged.json` it carries when that differs (so the differing files can be named; beside a lone weights
    file, its directory's), the manifest `prov merge` writes from the `--base-model` given and these tensors (a lone
    weights file), and the tensor digest alone (runs finalised before prov.merged-dir.v1)."""
    assert ev.tensor_digest is not None
    out: list[tuple[Digest, mergedir.MergedDirManifest | None]] = []
    if case.here is not None:
        out.append((case.here.digest(), case.here))
    beside = mergedir.read_beside(ev.subject.path if case.here is not None else ev.subject.path.parent)
    # only a manifest of these very tensors: other weights are a converted copy (--adapter) or not committed at all
    if beside is not None and beside[0].tensors == ev.tensor_digest and all(beside[1] != d for d, _ in out):
        out.append((beside[1], beside[0]))
    if case.here is None and case.base_model is not None:
        try:
            derived = mergedir.of_base(base_model_manifest(case.base_model).files, ev.tensor_digest)
            out.append((derived.digest(), derived))
        except ProvenanceError:  # not a usable base model: the base_model check says so
            pass
    out.append((ev.tensor_digest, None))
    return out


def _finalisation_claims(ev: Evidence, registry: RegistryReader, committed: Digest) -> list[claimsmod.Claim]:
    found = []
    for final in registry.find_merged(committed):
        history = registry.run(final.run_key)
        if not history.checkpoints:
            ev.warnings.append(f"run key {final.run_key.hex()[:12]}… committed these merged weights at its "
                               "finalisation but has no checkpoint: ignored")
            continue
        found.append(claimsmod.Claim(history.checkpoints[-1], "merged"))
    return found


def stage_checkpoint(ev: Evidence, store: StoreReader, tmp: Path) -> None:
    """The stored checkpoint is the committed one (its adapter is what was merged); with --adapter, it holds it."""
    checks, case = ev.checks, ev.merged
    assert isinstance(case, MergedCase)
    if ev.record is None:
        checks.not_run("checkpoint", checks.why_missing("record", "the on-chain record"))
        return
    with checks.run("checkpoint"):
        record = ev.record
        fetched = tmp / "committed"
        stored = fetch_committed(record, store, fetched)
        summary = f"the stored checkpoint {record.index} has the committed digest; its adapter is the one merged"
        if case.adapter is not None and case.finalization is None:
            from provenance.safetensors import tensor_digest

            same = (stored.weights_digest == case.adapter.weights_digest
                    or tensor_digest(stored.adapter) == tensor_digest(case.adapter.adapter))
            if not same:
                raise CheckFailed("the adapter given (--adapter) is not the one in the committed checkpoint",
                                  expected=stored.weights_digest, found=case.adapter.weights_digest)
            summary = f"the stored checkpoint {record.index} has the committed digest and holds the adapter given"
        case.stored = fetched
        checks.passed("checkpoint", summary)


def stage_merge(ev: Evidence, base_model: Path | None) -> None:
    """The `merge` check (see the module docstring)."""
    checks, case = ev.checks, ev.merged
    assert isinstance(case, MergedCase)
    if case.stored is None:
        checks.not_run(MERGE_CHECK, checks.why_missing("checkpoint" if ev.record else "record",
                                                       "the committed checkpoint's adapter"))
        return
    index, final, committed = ev.record.index, case.finalization, case.committed_tensors
    if final is not None and base_model is None:
        checks.passed(MERGE_CHECK, f"these are the merged weights the run's owner committed at finalisation (block "
                                   f"{final.block_number}) as checkpoint {index}'s adapter merged into the base model; "
                                   "not recomputed (pass --base-model to recompute the merge)")
        ev.notes.append(f"that these merged weights are checkpoint {index}'s adapter merged into the registered base "
                        f"model: pass --base-model to recompute the merge ({MERGE_FORMAT})")
        return
    if base_model is None or not checks.ok("base_model"):
        checks.not_run(MERGE_CHECK, checks.why_missing("base_model", "the registered base model (--base-model)"))
        return
    with checks.run(MERGE_CHECK), _merge(base_model, case.stored) as merge:
        if final is not None:
            recomputed = merge.digest()
            if recomputed != committed:
                raise CheckFailed(f"the merge committed at finalisation is not checkpoint {index}'s adapter merged "
                                  f"into the registered base model ({MERGE_FORMAT})", expected=recomputed,
                                  found=committed)
            checks.passed(MERGE_CHECK, f"recomputed from the registered base model and checkpoint {index}'s committed "
                                       f"adapter ({MERGE_FORMAT}): the merged weights committed at finalisation")
            return
        casts, recomputed = compare(merge, ev.subject.files)
        checks.passed(MERGE_CHECK, _converted_summary(ev, casts, recomputed, base_model))


@contextlib.contextmanager
def _merge(base_model: Path, stored: Path) -> Iterator[Merge]:
    try:
        with open_merge(base_model, stored / ADAPTER_FILE, stored / ADAPTER_CONFIG_FILE) as merge:
            yield merge
    except AdapterError as exc:  # the base model is the registered one: the committed adapter does not merge into it
        raise CheckFailed(f"the committed adapter cannot be merged into the registered base model ({exc})") from None


def _converted_summary(ev: Evidence, casts: Counter[str], recomputed: Digest, base_model: Path) -> str:
    index, history = ev.record.index, ev.history
    final = history.finalization
    committed = None if final is None else final.merged_tensor_digest
    last = index == len(history.checkpoints) - 1
    # a prov.merged-dir.v1 finalisation commits the manifest of the directory `prov merge` writes from these tensors
    as_directory = mergedir.of_base(base_model_manifest(base_model).files, recomputed).digest()
    if final is not None and last and committed in (recomputed, as_directory):
        what = f"the merge committed at finalisation (block {final.block_number})"
    else:
        what = f"checkpoint {index}'s committed adapter merged into the registered base model"
        if committed is not None and last:
            ev.warnings.append(f"the run's finalisation commits other merged weights ({committed}) than its last "
                               f"adapter merged into its base model ({MERGE_FORMAT}: tensors {recomputed}, "
                               f"directory {as_directory})")
    changed = {d: n for d, n in casts.items() if d}
    if not changed:
        return f"a copy in other files (re-sharded or re-encoded, same dtypes) of {what} ({MERGE_FORMAT}): bit for bit"
    kinds = ", ".join(DTYPE_NAMES[d] + (f" ×{n}" if len(changed) > 1 else "") for d, n in sorted(changed.items()))
    return (f"a converted copy ({kinds}) of {what}: every tensor equals the recomputed {MERGE_FORMAT} merge cast to "
            "its dtype (round to nearest even), bit for bit")


def compare(merge: Merge, files: tuple[Path, ...]) -> tuple[Counter[str], Digest]:
    """Compare a model's tensors with the merge, each cast to the model's dtype, bit for bit: CheckFailed names the
    first difference. Returns how many tensors were cast to each dtype ('' = not cast) and the merge's tensor
    digest, computed on the way."""
    with contextlib.ExitStack() as stack:
        given: dict[str, tuple[BinaryIO, int, TensorInfo]] = {}
        for path in files:
            handle: BinaryIO = stack.enter_context(path.open("rb"))
            header = header_of(handle, size=os.fstat(handle.fileno()).st_size, source=str(path))
            given.update((t.name, (handle, header.data_start, t)) for t in header.tensors)
        ours = {t.name for t in merge.tensors}
        missing, extra = sorted(ours - set(given)), sorted(set(given) - ours)
        if missing:
            raise CheckFailed(f"this model lacks tensor {missing[0]!r} of the merge", expected=missing[0],
                              found="no such tensor")
        if extra:
            raise CheckFailed(f"this model has tensor {extra[0]!r}, which the merge of the committed adapter into "
                              "the registered base model does not have", expected="no such tensor", found=extra[0])
        hasher = hashlib.sha256(canonical_header(merge.tensors))
        casts: Counter[str] = Counter()
        for info in merge.tensors:
            stream, start, theirs = given[info.name]
            casts[_compare_tensor(merge, info, theirs, stream, start, hasher)] += 1
    return casts, Digest(hasher.digest())


def _compare_tensor(merge: Merge, info: TensorInfo, theirs: TensorInfo, stream: BinaryIO, start: int,
                    hasher: Any) -> str:
    name = info.name
    if theirs.shape != info.shape:
        raise CheckFailed(f"tensor {name!r} has another shape than in the merge", expected=list(info.shape),
                          found=list(theirs.shape))
    cast = theirs.dtype != info.dtype
    if cast and (info.dtype not in FLOAT_DTYPES or theirs.dtype not in FLOAT_DTYPES):
        raise CheckFailed(f"tensor {name!r} has another dtype than in the merge", expected=info.dtype,
                          found=theirs.dtype)
    stream.seek(start + theirs.begin)
    element = 0
    for piece in merge.chunks(name):
        hasher.update(piece)
        expected = round_to_dtype(to_float64(piece, info.dtype), theirs.dtype) if cast else piece
        found = stream.read(len(expected))
        if found != expected:
            _first_difference(name, theirs.dtype, expected, found, element, cast=info.dtype if cast else None)
        element += len(expected) * 8 // _bits(theirs.dtype)
    return theirs.dtype if cast else ""


def _bits(dtype: str) -> int:
    from provenance.safetensors import DTYPE_BITS

    return DTYPE_BITS[dtype]


def _first_difference(name: str, dtype: str, expected: bytes, found: bytes, element: int, *, cast: str | None) -> None:
    if len(found) != len(expected):
        raise CheckFailed(f"tensor {name!r} is shorter than the merge", expected=len(expected), found=len(found))
    diff = np.flatnonzero(np.frombuffer(expected, np.uint8) != np.frombuffer(found, np.uint8))
    size = max(1, _bits(dtype) // 8)
    at = int(diff[0]) // size
    if dtype in FLOAT_DTYPES:
        want = to_float64(expected[at * size:(at + 1) * size], dtype)[0]
        got = to_float64(found[at * size:(at + 1) * size], dtype)[0]
        shown = (f"{name}[{element + at}] = {want!r}", f"{name}[{element + at}] = {got!r}")
    else:
        shown = (f"{name} byte {element * size + int(diff[0])}", "another value")
    how = f" cast to {DTYPE_NAMES[dtype]}" if cast else ""
    raise CheckFailed(f"tensor {name!r} differs from the recomputed merge{how} (first at element {element + at})",
                      expected=shown[0], found=shown[1])

