"""A finished run's files and formats (v2: salted batch commitments, hidden statistics, manifest v2), resume after a
simulated crash, empty batches, non-private mode, the determinism profile."""

from __future__ import annotations

import json
import shutil
import stat
import struct
from pathlib import Path
from typing import Any

import pytest

from provenance import canonical
from provenance.batches import batch_digest
from provenance.errors import UsageError
from provenance.hashing import Digest, hash_file
from provenance.manifest import MANIFEST_NAME, CheckpointManifest, hash_directory
from provenance.records import StepRecordV3, StepStats
from provenance.steplog import StepLog, parse_records, verify_log
from training.checkpoint import CHECKPOINT_FILES, read_checkpoint
from training.runinfo import read_manifest, run_id_of, write_manifest
from training.statslog import read_stats


def decode_run_manifest(raw: bytes) -> dict[str, Any]:
    return dict(canonical.decode(raw, strict=True))

STATE_KEYS = {"accountant", "checkpoint", "delta", "epsilon", "format", "log_root", "log_size", "optimizer", "rng",
              "run_id", "sampler", "step", "weights"}


def safetensors_metadata(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])["__metadata__"]


def test_run_directory_layout_and_manifest(tiny_run: Any, fixed_secrets: Any) -> None:
    run_dir: Path = tiny_run.run_dir
    assert {p.name for p in run_dir.iterdir()} == {"run.json", "secrets.json", "local.json", "steps.jsonl",
                                                   "stats.jsonl", "checkpoints", "train.lock",
                                                   "merged.json", "final"}
    assert stat.S_IMODE((run_dir / "secrets.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((run_dir / "stats.jsonl").stat().st_mode) == 0o600
    raw = (run_dir / "run.json").read_bytes()
    manifest = decode_run_manifest(raw)
    assert canonical.encode(manifest) == raw and read_manifest(run_dir) == manifest
    assert manifest["format"] == "prov.run.v2" and manifest["checkpoint_format"] == "prov.trainstate.v2"
    assert manifest["formats"] == {"batch": "prov.batch.v2", "noise": "prov.noise.v2", "stats": "prov.stats.v2",
                                   "step": "prov.step.v3", "trainstate": "prov.trainstate.v2",
                                   "adapter": "prov.adapter.v2", "merged": "prov.merged-dir.v1"}
    assert manifest["owner"] is None  # anchoring off: nobody will register it
    assert manifest["training"]["world_size"] == 1 and manifest["training"]["batch"]["physical_batch_size"] == 0
    assert manifest["run_id"] == tiny_run.run_id == run_id_of(manifest)
    assert manifest["secrets"] == fixed_secrets.commitments()
    for secret in (fixed_secrets.noise_seed.hex(), fixed_secrets.dataset_key.hex()):
        assert secret not in raw.decode()
        assert secret not in (run_dir / "steps.jsonl").read_text()
    dp = manifest["training"]["dp"]
    assert dp["mode"] == "dp" and dp["accountant"] == "prv" and dp["noise_multiplier"] == "1.0"
    assert float(dp["delta"]) == pytest.approx(1 / 256**1.1)
    assert manifest["training"]["steps"] == 6 and manifest["training"]["checkpoint_every"] == 2
    det = manifest["determinism"]
    assert det["threads"] == 1 and det["dtype"] == "float32" and det["attn_implementation"] == "eager"
    assert det["cpu_capability"] and det["device"] == "cpu" and det["cuda"] is None
    assert det["profile"] == "native" and set(det["env"]) >= {"ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA"}
    assert {"torch", "opacus", "peft", "transformers", "prov"} <= set(manifest["software"]["versions"])
    assert manifest["dataset"]["size"] == 256 and manifest["dataset"]["root"].startswith("sha256:")


def test_checkpoints_are_complete_hashed_and_chained(tiny_run: Any) -> None:
    run_dir: Path = tiny_run.run_dir
    log = StepLog.open(run_dir, create=False)
    assert log.size == 6 and verify_log(run_dir) == (6, log.root())
    segments = b""
    weights = set()
    for index, step in enumerate([0, 2, 4, 6]):
        path = run_dir / "checkpoints" / f"{index:06d}"
        names = {p.name for p in path.iterdir()}
        assert names == CHECKPOINT_FILES | {MANIFEST_NAME}
        stored = CheckpointManifest.decode((path / MANIFEST_NAME).read_bytes())
        assert stored == hash_directory(path)
        state = canonical.decode((path / "state.json").read_bytes(), strict=True)
        assert set(state) == STATE_KEYS and state["format"] == "prov.trainstate.v2"
        assert state["step"] == state["log_size"] == step and state["checkpoint"] == index
        assert state["log_root"] == log.root_at(step).hex()
        assert state["weights"] == str(hash_file(path / "adapter_model.safetensors"))
        assert state["run_id"] == tiny_run.run_id
        assert (state["epsilon"] == "0.0") if index == 0 else float(state["epsilon"]) > 0
        meta = safetensors_metadata(path / "adapter_model.safetensors")
        base = read_manifest(tiny_run.run_dir)["base_model"]
        assert meta == {"format": "pt", "prov.checkpoint": str(index), "prov.run_id": tiny_run.run_id,
                        "prov.step": str(step), "prov.base_model": base["digest"]}
        config = json.loads((path / "adapter_config.json").read_text())  # prov.adapter.v2: Hugging Face conventions
        assert config["base_model_name_or_path"] == base["name"] and config["task_type"] == "CAUSAL_LM"
        segment = (path / "steps.jsonl").read_bytes()
        assert [r.step for r in parse_records(segment, first_step=len(segments.splitlines()))] == list(
            range(len(segments.splitlines()), step))
        segments += segment
        weights.add(state["weights"])
        loaded = read_checkpoint(path)
        assert loaded.digest == stored.digest() and str(loaded.weights) == state["weights"]
    assert segments == (run_dir / "steps.jsonl").read_bytes()
    assert len(weights) == 4
    assert tiny_run.weights == Digest.parse(state["weights"]) and tiny_run.epsilon == float(state["epsilon"])


def test_records_commit_to_the_batches_and_to_the_hidden_statistics(tiny_run: Any, fixed_secrets: Any,
                                                                    tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    from provenance.batches import tokenize_records
    from provenance.dataset import load_records
    from provenance.sampler import poisson_indices
    from training.data import DEMO_DATA

    run_dir: Path = tiny_run.run_dir
    log = StepLog.open(run_dir, create=False)
    stats = read_stats(run_dir / "stats.jsonl")
    assert [s.step for s in stats] == list(range(6))
    tokenized = tokenize_records(load_records(DEMO_DATA), AutoTokenizer.from_pretrained(tiny_model_dir),
                                 max_length=32)
    for k in range(6):
        record = log.record(k)
        assert isinstance(record, StepRecordV3)  # the count is private: in the statistics commitment only
        indices = poisson_indices(fixed_secrets.noise_seed, k, 256, 8 / 256)
        assert stats[k].examples == len(indices) and record.noise_index == k
        assert "examples" not in record.to_json()
        assert record.batch == batch_digest(fixed_secrets.batch_key(), step=k, indices=indices,
                                            tensors=tokenized.batch(indices))
        assert record.stats == stats[k].commitment(fixed_secrets.stats_key())
        assert 0.0 < stats[k].loss < 20.0 and 0.0 <= stats[k].clipped_fraction <= 1.0
    published = (run_dir / "steps.jsonl").read_bytes() + b"".join(
        p.read_bytes() for p in (run_dir / "checkpoints").rglob("*") if p.is_file())
    for line in stats:
        assert repr(line.loss).encode() not in published  # the statistics are committed to, never published


def test_adapter_loads_in_peft(tiny_run: Any, tiny_model_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from training.model import load_base_model

    model, _ = load_base_model(tiny_model_dir)
    path = tiny_run.run_dir / "checkpoints" / "000003"
    peft_model = PeftModel.from_pretrained(model, path)
    saved = load_file(path / "adapter_model.safetensors")
    params = {n.replace(".default", ""): p for n, p in peft_model.named_parameters() if "lora_" in n}
    assert set(params) == set(saved)
    assert all(torch.equal(params[k], saved[k]) for k in saved)


def test_resume_after_crash_reproduces_the_run(tiny_run: Any, tmp_path: Path) -> None:
    """A run that died after step 5 was logged but before checkpoints 2 and 3 were complete resumes from
    checkpoint 1 and ends with byte-identical logs and checkpoints."""
    from training.trainer import resume

    original: Path = tiny_run.run_dir
    crashed = tmp_path / "run"
    shutil.copytree(original, crashed)
    shutil.rmtree(crashed / "checkpoints" / "000003")
    (crashed / "checkpoints" / "000002").rename(crashed / "checkpoints" / ".tmp-000002-12345")
    (crashed / "checkpoints" / ".tmp-000002-12345" / "state.json").unlink()  # half written
    with open(crashed / "steps.jsonl", "ab") as f:
        f.write(b'{"leaf":"00')  # torn tail of a step in flight
    result = resume(crashed, quiet=True)
    assert result.weights == tiny_run.weights and result.steps == 6
    assert (crashed / "steps.jsonl").read_bytes() == (original / "steps.jsonl").read_bytes()
    for index in range(4):
        a = hash_directory(original / "checkpoints" / f"{index:06d}").digest()
        b = hash_directory(crashed / "checkpoints" / f"{index:06d}").digest()
        assert a == b, index
    assert not list((crashed / "checkpoints").glob(".tmp-*"))
    side = sorted(p.name for p in crashed.glob("steps.jsonl.*"))
    assert side == ["steps.jsonl.rewound-0", "steps.jsonl.torn-0"]  # nothing destroyed
    assert (crashed / "stats.jsonl").read_bytes() == (original / "stats.jsonl").read_bytes()
    assert resume(crashed, quiet=True).weights == tiny_run.weights  # a finished run resumes to itself


def test_resume_refuses_a_run_written_before_v2(tiny_run: Any, tmp_path: Path) -> None:
    from training.trainer import resume

    old = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, old)
    manifest = read_manifest(old)
    for key in ("formats", "owner", "run_id"):
        del manifest[key]
    manifest["format"] = "prov.run.v1"
    manifest["run_id"] = run_id_of(manifest)
    write_manifest(old, manifest)
    with pytest.raises(UsageError, match=r"older prov \(prov.run.v1\)"):
        resume(old, quiet=True)


def test_resume_refuses_a_changed_dataset(tiny_run: Any, tmp_path: Path) -> None:
    from training.runinfo import write_local
    from training.trainer import resume

    crashed = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, crashed)
    other = tmp_path / "other.txt"
    other.write_text("different data\n")
    local = json.loads((crashed / "local.json").read_text())
    from training.config import AnchorConfig

    write_local(crashed, model_dir=Path(local["model"]), data_path=other, anchor=AnchorConfig(enabled=False))
    with pytest.raises(UsageError, match="dataset root mismatch"):
        resume(crashed, quiet=True)


def test_empty_poisson_batches_are_real_steps(tiny_config: Any, fixed_secrets: Any, tmp_path: Path,
                                              isolated_state: Path) -> None:
    from provenance.sampler import poisson_indices
    from training.trainer import train

    rate = 0.004  # about one example a step from 256
    empty = [k for k in range(8) if not poisson_indices(fixed_secrets.noise_seed, k, 256, rate)]
    assert empty, "these secrets give no empty batch in 8 steps; pick another rate"
    steps = empty[0] + 1
    result = train(tiny_config(tmp_path / "run", **{"training.sample_rate": rate, "training.steps": steps,
                                                    "training.checkpoint_every": steps}),
                   secrets=fixed_secrets, quiet=True)
    log = StepLog.open(result.run_dir, create=False)
    record = log.record(empty[0])
    stats = read_stats(result.run_dir / "stats.jsonl")[empty[0]]
    assert stats == StepStats(step=empty[0], loss=0.0, clipped_fraction=0.0, examples=0)
    assert record.noise_index == empty[0]
    # the noise-only step still moved the adapter (the guard would have stopped training otherwise)
    assert result.epsilon is not None and result.epsilon > 0


def test_non_private_runs_are_recorded_as_such(tiny_config: Any, fixed_secrets: Any, tmp_path: Path,
                                               isolated_state: Path) -> None:
    from training.trainer import train

    result = train(tiny_config(tmp_path / "run", **{"dp.enabled": False, "training.steps": 2}),
                   secrets=fixed_secrets, quiet=True)
    manifest = decode_run_manifest((result.run_dir / "run.json").read_bytes())
    dp = manifest["training"]["dp"]
    assert dp["mode"] == "non-private" and dp["noise_multiplier"] is None and dp["accountant"] is None
    state = read_checkpoint(result.run_dir / "checkpoints" / "000001").state
    assert state["epsilon"] is None and state["accountant"] is None
    assert result.epsilon is None


def test_a_run_cannot_be_trained_twice_at_once(tiny_run: Any, tmp_path: Path) -> None:
    from training.rundir import lock_run, unlock_run
    from training.trainer import resume

    copy = tmp_path / "run"
    shutil.copytree(tiny_run.run_dir, copy)
    held = lock_run(copy)
    try:
        with pytest.raises(UsageError, match="another prov train is running"):
            resume(copy, quiet=True)
    finally:
        unlock_run(held)


def test_existing_run_directory_is_refused(tiny_run: Any, tiny_config: Any, fixed_secrets: Any) -> None:
    from training.trainer import train

    with pytest.raises(UsageError, match="--resume"):
        train(tiny_config(tiny_run.run_dir), secrets=fixed_secrets, quiet=True)


def test_a_profile_that_cannot_be_applied_is_recorded_as_it_ran(tiny_config: Any, fixed_secrets: Any,
                                                                tmp_path: Path, isolated_state: Path) -> None:
    """pytest imported torch long ago: the portable profile cannot change the kernels any more, so the run records
    the capability that really ran, as native, and says so (unless this CPU's native kernels are the portable
    ones)."""
    import io

    from training.determinism import cpu_capability
    from training.trainer import train

    stream = io.StringIO()
    result = train(tiny_config(tmp_path / "run", **{"training.steps": 1, "training.checkpoint_every": 1,
                                                    "determinism.profile": "portable"}),
                   secrets=fixed_secrets, stream=stream)
    det = read_manifest(result.run_dir)["determinism"]
    assert det["cpu_capability"] == cpu_capability()
    if cpu_capability() == "AVX2":
        assert det["profile"] == "portable" and "warning" not in stream.getvalue()
    else:
        assert det["profile"] == "native"
        assert f"torch was imported before the profile could be applied and runs {cpu_capability()}" in \
            stream.getvalue()


def test_state_records_epsilon_rounded_up_to_micro_epsilon(tiny_run: Any) -> None:
    """state.json's ε is the committed micro-ε (rounded up), so numpy's SIMD level cannot change a checkpoint
    digest: two ε that differ in the last bits (as AVX512 and AVX2 numpy builds give) record the same text."""
    from provenance.chain import epsilon_to_micro
    from training.checkpoint import epsilon_text
    from training.plan import Plan, epsilon_after

    assert epsilon_text(0.09726343457700286) == epsilon_text(0.09726343457700429) == "0.097264"
    assert epsilon_text(None) is None and epsilon_text(0.0) == "0.0" and epsilon_text(3e-7) == "1e-06"
    plan = Plan.from_json(read_manifest(tiny_run.run_dir)["training"])
    for index, steps in enumerate([0, 2, 4, 6]):
        state = read_checkpoint(tiny_run.run_dir / "checkpoints" / f"{index:06d}").state
        exact = epsilon_after(plan, steps)
        assert exact is not None and exact <= float(state["epsilon"]) < exact + 1e-6
        assert epsilon_to_micro(float(state["epsilon"])) == epsilon_to_micro(exact)
