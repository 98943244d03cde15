"""torchrun (CPU, gloo): a 2-process run whose every checkpoint the replay worker rebuilds bit for bit in ONE
process, and kill -9 of rank 0 followed by `prov train --resume` (on 2 processes, or on 1 computing both shards)
ending with the same log, statistics and checkpoints as the uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provenance.manifest import hash_directory
from provenance.records import StepRecordV3
from provenance.steplog import StepLog, verify_log
from tests.fixtures.training import assert_rebuilds, replay_run
from training.data import DEMO_DATA

pytestmark = [pytest.mark.slow]

CONFIG = """
[training]
steps = 5
checkpoint_every = 2
threads = 1
physical_batch_size = 3
[lora]
dropout = 0.1
[anchor]
enabled = false
"""


def _env(base: Path, fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PROV_TRAIN_FAULT", "OMP_NUM_THREADS")}
    env["PROV_HOME"] = str(base / "home")
    if fault:
        env["PROV_TRAIN_FAULT"] = fault
    return env


def _prov(base: Path, args: list[str], *, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provenance", *args], env=_env(base, fault), capture_output=True,
                          text=True, timeout=600, check=False)


def _launch_log(run: Path) -> str:
    """The end of torchrun's output (the failing rank's traceback), for an assertion message."""
    path = run / "launch.log"
    return "\n--- launch.log ---\n" + path.read_text(errors="replace")[-6000:] if path.is_file() else ""


def _train_args(base: Path, model: Path, secrets: Any, run: Path) -> list[str]:
    config = base / "train.toml"
    config.write_text(CONFIG)
    secrets_file = base / "secrets-in.json"
    if not secrets_file.exists():
        secrets.save(secrets_file)
    return ["train", str(config), "--model", str(model), "--out", str(run), "--secrets", str(secrets_file),
            "--nproc", "2", "--quiet"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, fixed_secrets: Any) -> Path:
    base = tmp_path_factory.mktemp("torchrun")
    run = base / "run"
    out = _prov(base, [*_train_args(base, tiny_model_dir, fixed_secrets, run), "--json"])
    assert out.returncode == 0, out.stderr[-3000:] + _launch_log(run)
    summary = json.loads(out.stdout)
    assert summary["steps"] == 5 and summary["checkpoints"] == 4
    return run


def test_a_two_process_run_is_recorded_as_one(two_process_run: Path) -> None:
    manifest = json.loads((two_process_run / "run.json").read_text())
    assert manifest["training"]["world_size"] == 2 and manifest["training"]["batch"]["physical_batch_size"] == 3
    det = manifest["determinism"]
    assert det["threads"] == 1 and det["env"]["OMP_NUM_THREADS"] == "1"
    if det["machine"] == "x86_64":  # `prov train` applied the portable profile before torch was imported
        assert det["profile"] == "portable" and det["cpu_capability"] == "AVX2"
        assert det["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and det["env"]["MKL_CBWR"] == "AVX2"
    assert verify_log(two_process_run)[0] == 5
    log = StepLog.open(two_process_run, create=False)
    assert all(isinstance(r, StepRecordV3) for r in log.records())
    assert (two_process_run / "launch.log").is_file()


@pytest.mark.replay
def test_every_segment_replays_bit_for_bit_in_one_process(two_process_run: Path, tiny_model_dir: Path,
                                                          tmp_path: Path) -> None:
    from training.runinfo import read_manifest

    _, result = replay_run(two_process_run, base_model=tiny_model_dir, data=DEMO_DATA, work=tmp_path,
                           env=_env(tmp_path))
    assert result["environment"]["threads"] == 1
    # the two ranks' shards were computed concurrently on this machine's cores (LoRA dropout on: own generators)
    assert result["environment"]["shard_threads"] == min(2, len(os.sched_getaffinity(0)))
    assert result["environment"]["cpu_capability"] == read_manifest(two_process_run)["determinism"]["cpu_capability"]
    assert_rebuilds(two_process_run, result, [0, 1, 2, 3])


@pytest.mark.parametrize("resume_nproc", [2, 1])
def test_kill_rank_0_then_resume(resume_nproc: int, two_process_run: Path, tmp_path: Path, tiny_model_dir: Path,
                                 fixed_secrets: Any) -> None:
    run = tmp_path / "run"
    killed = _prov(tmp_path, _train_args(tmp_path, tiny_model_dir, fixed_secrets, run), fault="step:3")
    assert killed.returncode == 2 and killed.stderr.startswith("prov: error: torchrun exited")
    assert killed.stderr.count("\n") == 1, killed.stderr
    resumed = _prov(tmp_path, ["train", "--resume", str(run), "--nproc", str(resume_nproc), "--quiet"])
    assert resumed.returncode == 0, resumed.stderr[-3000:] + _launch_log(run)
    for name in ("run.json", "steps.jsonl", "stats.jsonl"):
        assert (run / name).read_bytes() == (two_process_run / name).read_bytes(), name
    for index in range(4):
        mine = hash_directory(run / "checkpoints" / f"{index:06d}").digest()
        assert mine == hash_directory(two_process_run / "checkpoints" / f"{index:06d}").digest(), index


def test_a_rank_that_fails_says_why_in_one_line(tmp_path: Path, tiny_model_dir: Path, fixed_secrets: Any) -> None:
    """An unexpected exception in a rank (not a prov error): the user gets its type and message in one line naming
    launch.log, which holds the traceback, instead of torchrun's summary."""
    run = tmp_path / "run"
    out = _prov(tmp_path, _train_args(tmp_path, tiny_model_dir, fixed_secrets, run), fault="raise:step:1")
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("prov: error: rank 0 failed: RuntimeError: injected fault at step 1 (traceback in ")
    assert "launch.log" in out.stderr and "Traceback (most recent call last)" in (run / "launch.log").read_text()


@pytest.mark.replay
def test_an_anchored_two_process_run_shares_its_anchored_keys(tmp_path: Path, tiny_model_dir: Path,
                                                              fixed_secrets: Any) -> None:
    """prov.keys.v1 under torchrun: rank 0 records the registration block (keys.json) before step 0 and the other
    rank derives the same sampling keys from it; one process replaying with that block rebuilds every checkpoint."""
    from training.runinfo import read_manifest

    run = tmp_path / "run"
    args = _train_args(tmp_path, tiny_model_dir, fixed_secrets, run)
    (tmp_path / "train.toml").write_text(CONFIG.replace("enabled = false", 'chain = "tester"\nfinalize = false'))
    out = _prov(tmp_path, args)
    assert out.returncode == 0, out.stderr[-3000:] + _launch_log(run)
    assert read_manifest(run)["formats"]["sampler"] == "prov.poisson.v2" and (run / "keys.json").is_file()
    request, result = replay_run(run, base_model=tiny_model_dir, data=DEMO_DATA, work=tmp_path, env=_env(tmp_path))
    assert request.keys_anchor is not None
    assert_rebuilds(run, result, [0, 1, 2, 3])


@pytest.mark.replay
def test_a_two_process_canary_run_trains_on_its_members_and_replays(tmp_path: Path, tiny_model_dir: Path,
                                                                    fixed_secrets: Any) -> None:
    """`--canaries M` under torchrun: the launcher draws the canaries once while preparing the run, both ranks read
    the same RUN/data.jsonl (the user's records then the members), and one process replaying with that file
    rebuilds every checkpoint; `prov audit-dp` then reads the run like a one-process one."""
    from provenance.canaries import CANARIES_NAME, DATA_NAME, load
    from provenance.dataset import load_records
    from training.runinfo import read_manifest

    run = tmp_path / "run"
    out = _prov(tmp_path, [*_train_args(tmp_path, tiny_model_dir, fixed_secrets, run), "--canaries", "8"])
    assert out.returncode == 0, out.stderr[-3000:] + _launch_log(run)
    canaries = load(run / CANARIES_NAME)
    manifest = read_manifest(run)
    assert manifest["training"]["world_size"] == 2 and manifest["canaries"] == canaries.manifest_section()
    assert list(load_records(run / DATA_NAME)) == [*load_records(DEMO_DATA), *canaries.members()]
    _, result = replay_run(run, base_model=tiny_model_dir, data=run / DATA_NAME, work=tmp_path, env=_env(tmp_path))
    assert_rebuilds(run, result, [0, 1, 2, 3])
    audit = _prov(tmp_path, ["audit-dp", str(run), "--json"])
    assert audit.returncode == 0, audit.stderr
    assert json.loads(audit.stdout)["canaries"] == 8
