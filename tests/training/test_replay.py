"""Replay: every checkpoint of a run re-runs to the next one bit for bit; tampering shows at the right step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provenance.dataset import load_examples
from provenance.errors import UsageError
from provenance.secrets import Secrets
from provenance.steplog import StepLog
from training.checkpoint import read_checkpoint
from training.data import DEMO_DATA
from training.replay import replay_segment


def test_replay_from_every_checkpoint_reproduces_the_next(tiny_run: Any, fixed_secrets: Any,
                                                          tiny_model_dir: Path) -> None:
    run_dir: Path = tiny_run.run_dir
    log = StepLog.open(run_dir, create=False)
    examples = load_examples(DEMO_DATA)
    for index in range(3):
        result = replay_segment(run_dir / "checkpoints" / f"{index:06d}", batches=examples, secrets=fixed_secrets,
                                base_model_dir=tiny_model_dir)
        following = read_checkpoint(run_dir / "checkpoints" / f"{index + 1:06d}")
        assert result.weights == following.weights, index
        assert result.adapter == (following.path / "adapter_model.safetensors").read_bytes()
        assert result.records == [log.record(k) for k in range(2 * index, 2 * index + 2)]
        assert result.epsilon == float(following.state["epsilon"])


def test_replay_of_a_partial_segment_and_per_step_weights(tiny_run: Any, fixed_secrets: Any,
                                                          tiny_model_dir: Path) -> None:
    path = tiny_run.run_dir / "checkpoints" / "000001"
    examples = load_examples(DEMO_DATA)
    one = replay_segment(path, steps=1, batches=examples, secrets=fixed_secrets, base_model_dir=tiny_model_dir,
                         per_step_weights=True)
    assert one.start_step == 2 and one.end_step == 3 and len(one.steps) == 1
    assert one.steps[0].weights == one.weights
    with pytest.raises(UsageError, match="consecutive"):
        replay_segment(path, steps=[3, 4], batches=examples, secrets=fixed_secrets, base_model_dir=tiny_model_dir)
    with pytest.raises(UsageError, match="do not match"):
        replay_segment(path, batches=examples, secrets=Secrets.generate(), base_model_dir=tiny_model_dir)


def test_replay_refuses_a_different_cpu_unless_told(tiny_run: Any, fixed_secrets: Any, tiny_model_dir: Path) -> None:
    from training.runinfo import read_manifest

    manifest = read_manifest(tiny_run.run_dir)
    manifest["determinism"] = {**manifest["determinism"], "cpu_capability": "SOME_OTHER_CPU"}
    path = tiny_run.run_dir / "checkpoints" / "000002"
    examples = load_examples(DEMO_DATA)
    with pytest.raises(UsageError, match="would not be bitwise: cpu_capability"):
        replay_segment(path, batches=examples, secrets=fixed_secrets, base_model_dir=tiny_model_dir,
                       run_manifest=manifest)
    result = replay_segment(path, batches=examples, secrets=fixed_secrets, base_model_dir=tiny_model_dir,
                            run_manifest=manifest, check_environment=False)
    assert result.weights == read_checkpoint(tiny_run.run_dir / "checkpoints" / "000003").weights


def test_a_tampered_batch_is_found_at_its_step(tiny_run: Any, fixed_secrets: Any, tiny_model_dir: Path) -> None:
    """Feed the logged batches, but change one token in the second step: that step's record and the final
    weights diverge while the first step still matches (what the verifier's bisection relies on)."""
    from transformers import AutoTokenizer

    from provenance.batches import tokenize
    from provenance.sampler import poisson_indices

    run_dir: Path = tiny_run.run_dir
    log = StepLog.open(run_dir, create=False)
    tokenized = tokenize(load_examples(DEMO_DATA), AutoTokenizer.from_pretrained(tiny_model_dir), max_length=32)
    given = []
    for k in (2, 3):
        indices = poisson_indices(fixed_secrets.noise_seed, k, 256, 8 / 256)
        batch = tokenized.batch(indices)
        if k == 3:
            batch = {name: array.copy() for name, array in batch.items()}
            batch["input_ids"][0, 3] = (batch["input_ids"][0, 3] + 1) % 512
        given.append((indices, batch))
    result = replay_segment(run_dir / "checkpoints" / "000001", batches=given, secrets=fixed_secrets,
                            base_model_dir=tiny_model_dir)
    assert result.records[0] == log.record(2)
    assert result.records[1].batch != log.record(3).batch
    assert result.records[1].loss != log.record(3).loss
    assert result.weights != read_checkpoint(run_dir / "checkpoints" / "000002").weights
    assert np.array_equal(given[0][1]["labels"], tokenized.batch(given[0][0])["labels"])


@pytest.mark.slow
@pytest.mark.replay
def test_replay_in_a_fresh_process_from_every_checkpoint(tiny_run: Any, tiny_model_dir: Path) -> None:
    run_dir: Path = tiny_run.run_dir
    for index in range(3):
        out = subprocess.run(
            [sys.executable, "-m", "training.replay", str(run_dir / "checkpoints" / f"{index:06d}"),
             "--model", str(tiny_model_dir), "--data", str(DEMO_DATA)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        following = read_checkpoint(run_dir / "checkpoints" / f"{index + 1:06d}")
        assert doc["weights"] == str(following.weights), index
        assert doc["start_step"] == 2 * index and doc["end_step"] == 2 * index + 2
