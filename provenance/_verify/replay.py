"""The auditor's data checks: the dataset root recomputed from `--data` and the secrets, and bitwise replay of
sampled segments (checkpoint j−1 → j) with the trainer's own engine (`training.replay.replay_segment`).

Which segments: derived from the hash of the first block *after* the verified checkpoint's commitment — a value the
trainer could not know when it committed — as `SHA-256(block_hash || uint32_be(counter))` draws over the
candidate segments 1..k (a partial Fisher–Yates shuffle). `--replay all` replays every segment. On a mismatch the
replayed step records are compared with the logged ones and the first diverging step is reported (which field, what
was logged, what replay produced). If this machine cannot match the recorded determinism settings (CPU kernels,
threads, library versions) the replay still runs but reports the relative L2 distance between the replayed and
committed weights instead of a bitwise verdict. Needs the `train` extra (torch) and `--base-model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from pathlib import Path
from typing import Any

from provenance._verify.checks import CheckFailed
from provenance.errors import UsageError
from provenance.hashing import Digest

_FIELDS = ("batch", "examples", "loss", "clipped_fraction", "lr", "noise_index")


def choose_segments(seed: bytes, candidates: list[int], count: int | None) -> list[int]:
    """`count` distinct candidates (all when None) chosen by a partial Fisher–Yates shuffle driven by `seed`."""
    pool = list(candidates)
    take = len(pool) if count is None else min(count, len(pool))
    for i in range(take):
        draw = hashlib.sha256(seed + i.to_bytes(4, "big")).digest()
        j = i + int.from_bytes(draw[:8], "big") % (len(pool) - i)
        pool[i], pool[j] = pool[j], pool[i]
    return sorted(pool[:take])


def first_divergence(logged: list[Any], replayed: list[Any]) -> dict[str, Any] | None:
    for old, new in zip(logged, replayed, strict=False):
        for field in _FIELDS:
            a, b = getattr(old, field), getattr(new, field)
            if a != b and not (isinstance(a, float) and math.isnan(a) and math.isnan(b)):
                return {"step": old.step, "field": field, "expected": str(a), "found": str(b)}
    if len(logged) != len(replayed):
        return {"step": min(len(logged), len(replayed)), "field": "steps", "expected": str(len(logged)),
                "found": str(len(replayed))}
    return None


def _weight_distance(replayed: bytes, committed: bytes) -> float:
    import numpy as np
    from safetensors.numpy import load

    a, b = load(replayed), load(committed)
    num = sum(float(np.sum((a[k].astype(np.float64) - b[k].astype(np.float64)) ** 2)) for k in a)
    den = sum(float(np.sum(b[k].astype(np.float64) ** 2)) for k in b) or 1.0
    return math.sqrt(num / den)


def check_data_and_replay(st: Any, *, registry: Any, store: Any, options: Any, workdir: Path) -> dict[str, Any] | None:
    checks = st.checks
    if options.data is None or options.secrets is None:
        why = "needs --data and --secrets (the dataset key and noise seed, given only to auditors)"
        checks.skipped("dataset", why)
        checks.skipped("replay", why)
        return None
    if importlib.util.find_spec("torch") is None:
        checks.skipped("dataset", "the training extra is not installed (pip install torch==2.13.0 'prov[train]')")
        checks.skipped("replay", "the training extra is not installed")
        return None
    from provenance.dataset import dataset_root, load_examples
    from provenance.secrets import Secrets

    secrets = Secrets.load(options.secrets)
    manifest = st.manifest
    examples = load_examples(options.data, text_field=manifest["dataset"].get("text_field", "text"))
    with checks.run("dataset"):
        expected_key = manifest["secrets"].get("dataset_key_commitment")
        if str(Digest.of(secrets.dataset_key)) != expected_key:
            raise CheckFailed("the dataset key given does not open the run's commitment", expected=expected_key,
                              found=Digest.of(secrets.dataset_key))
        found = dataset_root(examples, secrets.dataset_key)
        if found != st.run.dataset_root:
            raise CheckFailed("the data given is not the committed training set (its salted root differs)",
                              expected=st.run.dataset_root, found=found)
        checks.passed("dataset", f"{len(examples)} examples; the salted root matches the commitment")
    if options.replay == "0":
        checks.skipped("replay", "--replay 0: no segment replayed")
        return None
    if options.base_model is None:
        checks.skipped("replay", "needs --base-model (the base model's weights) to re-run training steps")
        return None
    return _replay(st, registry=registry, store=store, options=options, workdir=workdir, secrets=secrets,
                   examples=examples)


def _replay(st: Any, *, registry: Any, store: Any, options: Any, workdir: Path, secrets: Any,
            examples: list[str]) -> dict[str, Any] | None:
    checks = st.checks
    lineage = st.lineage
    candidates = [r.index for r in lineage if r.index >= 1 and r.log_size > lineage[r.index - 1].log_size]
    after = registry.block_hash_after(st.record.block_number)
    note = ""
    if after is None:  # nothing mined since: fall back to the commitment's own block, and say so
        block = registry.web3.eth.get_block(st.record.block_number)
        after = (int(block["number"]), bytes(block["hash"]))
        note = " (no later block yet, so the commitment's own block)"
    count = None if options.replay == "all" else int(options.replay)
    chosen = choose_segments(after[1], candidates, count)
    section: dict[str, Any] = {"seed_block": after[0], "seed_hash": "0x" + after[1].hex(),
                               "requested": options.replay, "segments": []}
    with checks.run("replay"):
        if secrets.noise_seed and str(Digest.of(secrets.noise_seed)) != str(st.run.noise_seed_commitment):
            raise CheckFailed("the noise seed given does not open the run's commitment",
                              expected=st.run.noise_seed_commitment, found=Digest.of(secrets.noise_seed))
        failures, approximate = [], []
        for j in chosen:
            segment = _replay_one(j, st=st, store=store, options=options, workdir=workdir, secrets=secrets,
                                  examples=examples)
            section["segments"].append(segment)
            if segment["status"] == "failed":
                failures.append(segment)
            elif not segment["bitwise"]:
                approximate.append(segment)
        if failures:
            first = failures[0]
            div = first["first_divergence"]
            where = f"; first diverging step {div['step']} ({div['field']})" if div else ""
            raise CheckFailed(f"replaying checkpoint {first['from_index']} → {first['to_index']} did not reproduce "
                              f"the committed weights{where}", expected=div["expected"] if div else None,
                              found=div["found"] if div else None)
        if approximate:
            checks.skipped("replay", "this machine cannot match the recorded determinism settings; relative weight "
                                     "distance " + ", ".join(f"{s['weight_distance']:.2e}" for s in approximate))
        elif not chosen:
            checks.skipped("replay", "no segment with training steps to replay")
        else:
            checks.passed("replay", f"segment(s) {chosen} re-run bit for bit, chosen by block {after[0]}'s hash"
                                    f"{note}")
    return section


def _replay_one(j: int, *, st: Any, store: Any, options: Any, workdir: Path, secrets: Any,
                examples: list[str]) -> dict[str, Any]:
    from training.replay import replay_segment

    start, end = st.lineage[j - 1], st.lineage[j]
    source = workdir / f"replay-{j - 1}"
    if not source.exists():
        store.get_directory(start.manifest_cid, source)
    kwargs = {"steps": range(start.log_size, end.log_size), "batches": examples, "secrets": secrets,
              "base_model_dir": options.base_model, "run_manifest": st.manifest, "target_checkpoint": j}
    bitwise = True
    try:
        result = replay_segment(source, **kwargs)
    except UsageError as exc:
        if "would not be bitwise" not in str(exc):
            raise
        bitwise = False
        result = replay_segment(source, check_environment=False, **kwargs)
    logged = st.steps[start.log_size:end.log_size]
    divergence = first_divergence(logged, result.records)
    matches = result.weights == end.weights_digest
    distance = None
    if not bitwise:
        committed = store.get_bytes(st.files[j].listing["adapter_model.safetensors"])
        distance = _weight_distance(result.adapter, committed)
    status = "passed" if matches and divergence is None else ("skipped" if not bitwise else "failed")
    if status == "failed" and divergence is None:
        divergence = {"step": end.log_size - 1, "field": "weights", "expected": str(end.weights_digest),
                      "found": str(result.weights)}
    return {"from_index": j - 1, "to_index": j, "steps": [start.log_size, end.log_size], "status": status,
            "bitwise": bitwise and matches, "weight_distance": distance, "first_divergence": divergence}
