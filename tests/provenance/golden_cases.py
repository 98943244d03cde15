"""The documents pinned by golden files. `python -m tests.provenance.golden_cases` rewrites them (deliberately)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from provenance import canonical
from provenance.hashing import Digest
from provenance.manifest import CheckpointManifest, FileEntry, encode_run_manifest
from provenance.records import StepRecord, encode_batch

GOLDEN = Path(__file__).parent / "golden"


def batch_bytes() -> bytes:
    return encode_batch(
        step=7,
        indices=[3, 11, 42],
        tensors={
            "input_ids": np.arange(12, dtype=np.int64).reshape(3, 4),
            "attention_mask": np.array([[1, 1, 1, 0]] * 3, dtype=np.int64),
            "labels": np.array([[0, 1, 2, -100]] * 3, dtype=np.int64),
        },
    )


def empty_batch_bytes() -> bytes:
    z = np.zeros((0, 4), dtype=np.int64)
    return encode_batch(step=8, indices=[], tensors={"input_ids": z, "attention_mask": z, "labels": z})


def step_record() -> StepRecord:
    return StepRecord(step=7, batch=Digest.of(batch_bytes()), examples=3, lr=0.0005, loss=2.302585092994046,
                      clipped_fraction=0.6666666666666666, noise_index=7)


def checkpoint_manifest() -> CheckpointManifest:
    return CheckpointManifest((
        FileEntry("adapter_config.json", Digest.of(b"{}"), 2),
        FileEntry("adapter_model.safetensors", Digest.of(b"weights"), 7),
        FileEntry("sub/state.json", Digest.of(b"state"), 5),
    ))


def run_manifest() -> dict[str, object]:
    return {
        "format": "prov.run.v1",
        "run_id": "00" * 32,
        "base_model": {"digest": str(Digest.of(b"model")), "name": "tiny-llama"},
        "dataset": {"root": str(Digest.of(b"dataset")), "examples": 3},
        "secrets": {"noise_seed_commitment": str(Digest.of(b"seed")),
                    "dataset_key_commitment": str(Digest.of(b"key"))},
        "training": {"steps": 10, "dp": {"mode": "dp", "noise_multiplier": "1.0"}},
        "software": {"prov": "0.1.0"},
        "determinism": {"threads": 2},
    }


CASES = {
    "batch.v1.safetensors": batch_bytes,
    "batch-empty.v1.safetensors": empty_batch_bytes,
    "step.v1.json": lambda: step_record().encode(),
    "checkpoint.v1.json": lambda: checkpoint_manifest().encode(),
    "run.v1.json": lambda: encode_run_manifest(run_manifest()),
    "canonical.json": lambda: canonical.encode({"b": [1, "x", None, True], "a": {"é": -5}}),
}

if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for name, make in CASES.items():
        (GOLDEN / name).write_bytes(make())
        print("wrote", GOLDEN / name)
