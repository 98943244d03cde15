"""kill -9 at every kind of moment (during a step, a checkpoint write, an anchor, or at a random time), then
`prov train --resume`: the run ends with the same log and checkpoints as an uninterrupted run, and — when
anchoring to a real chain (anvil) — every checkpoint is committed exactly once with the local values."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from provenance.hashing import hash_file
from provenance.manifest import hash_directory
from provenance.safetensors import tensor_digest
from provenance.steplog import verify_log
from training.checkpoint import read_checkpoint

pytestmark = [pytest.mark.slow]

CONFIG = """
[training]
steps = 6
checkpoint_every = 2
threads = 1
[lora]
dropout = 0.1
"""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, fixed_secrets: Any) -> Path:
    """The uninterrupted run, made by the same CLI path as the crashing ones."""
    base = tmp_path_factory.mktemp("crash-ref")
    _prov(base, ["train", str(_files(base, fixed_secrets)[0]), "--model", str(tiny_model_dir), "--out",
                 str(base / "run"), "--secrets", str(_files(base, fixed_secrets)[1]), "--no-anchor", "--quiet"])
    return base / "run"


def _files(base: Path, secrets: Any) -> tuple[Path, Path]:
    config = base / "train.toml"
    config.write_text(CONFIG)
    secrets_file = base / "secrets-in.json"
    if not secrets_file.exists():
        secrets.save(secrets_file)
    return config, secrets_file


def _env(base: Path, fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PROV_TRAIN_FAULT"}
    env["PROV_HOME"] = str(base / "home")
    if fault:
        env["PROV_TRAIN_FAULT"] = fault
    return env


def _prov(base: Path, args: list[str], *, fault: str | None = None, expect: int = 0) -> None:
    out = subprocess.run([sys.executable, "-m", "provenance", *args], env=_env(base, fault), capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == expect, out.stderr[-2000:]


def _same_lineage(run: Path, reference: Path, *, same_owner: bool = True) -> None:
    """`same_owner=False`: an anchored run names its owner in its manifest (so its run id, and the run id in each
    checkpoint, differ from the unanchored reference's): its tensors, optimizer state and log must still match."""
    assert verify_log(run)[0] == 6
    assert (run / "steps.jsonl").read_bytes() == (reference / "steps.jsonl").read_bytes()
    for index in range(4):
        mine = run / "checkpoints" / f"{index:06d}"
        theirs = reference / "checkpoints" / f"{index:06d}"
        if same_owner:
            assert hash_directory(mine).digest() == hash_directory(theirs).digest()
        else:
            adapter = "adapter_model.safetensors"
            assert tensor_digest(mine / adapter) == tensor_digest(theirs / adapter)
            for name in ("optimizer.safetensors", "steps.jsonl", "adapter_config.json"):
                assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name
        read_checkpoint(mine)  # manifest matches files
    assert not list((run / "checkpoints").glob(".tmp-*"))


def _anchored(run: Path, rpc_url: str, address: str) -> None:
    from provenance.chain import connect

    registry = connect(rpc_url, registry=address, use_config=False)
    run_id = bytes.fromhex(read_checkpoint(run / "checkpoints" / "000000").state["run_id"])
    assert registry.get_run(run_id).checkpoint_count == 4
    records = registry.checkpoints(run_id)
    assert [r.index for r in records] == [0, 1, 2, 3]  # each exactly once, in order
    for record in records:
        local = read_checkpoint(run / "checkpoints" / f"{record.index:06d}")
        assert record.weights_digest == hash_file(local.path / "adapter_model.safetensors")
        assert record.checkpoint_digest == local.digest
        assert record.log_size == local.state["log_size"] and record.log_root.hex == local.state["log_root"]


@pytest.mark.parametrize("fault", ["step:3", "logged:2", "checkpoint-write:2", "checkpoint-write:0"])
def test_kill_then_resume_without_anchoring(fault: str, tmp_path: Path, tiny_model_dir: Path, fixed_secrets: Any,
                                            reference: Path) -> None:
    config, secrets = _files(tmp_path, fixed_secrets)
    run = tmp_path / "run"
    args = ["train", str(config), "--model", str(tiny_model_dir), "--out", str(run), "--secrets", str(secrets),
            "--no-anchor", "--quiet"]
    _prov(tmp_path, args, fault=fault, expect=-signal.SIGKILL)
    _prov(tmp_path, ["train", "--resume", str(run), "--quiet"])
    _same_lineage(run, reference)


@pytest.fixture
def deployed(anvil_node: Any, tmp_path: Path) -> tuple[str, str]:
    """A fresh registry on anvil, named in this test's project config (so `prov train` anchors there)."""
    from provenance.chain import connect
    from provenance.config import update_section

    registry = connect(anvil_node.rpc_url, use_config=False)
    registry.deploy()
    assert registry.address is not None
    update_section("chain", {"registry": registry.address, "rpc_url": anvil_node.rpc_url}, home=tmp_path / "home")
    return anvil_node.rpc_url, registry.address


@pytest.mark.chain
@pytest.mark.parametrize("fault", ["checkpoint-done:1", "anchor:2", "external"])
def test_kill_then_resume_with_anchoring(fault: str, tmp_path: Path, tiny_model_dir: Path, fixed_secrets: Any,
                                         deployed: tuple[str, str]) -> None:
    config, secrets = _files(tmp_path, fixed_secrets)
    run = tmp_path / "run"
    args = [sys.executable, "-m", "provenance", "train", str(config), "--model", str(tiny_model_dir), "--out",
            str(run), "--secrets", str(secrets), "--quiet"]
    if fault == "external":  # SIGKILL from outside at a random moment after checkpoint 0 is in place
        proc = subprocess.Popen(args, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "000000").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))
        proc.kill()
        proc.wait(timeout=30)
    else:
        _prov(tmp_path, args[3:], fault=fault, expect=-signal.SIGKILL)
    _prov(tmp_path, ["train", "--resume", str(run), "--quiet"])
    assert (run / "keys.json").is_file()  # prov.keys.v1: recorded before step 0, so the resume used the same keys
    _same_lineage(run, _uninterrupted(run, tmp_path))
    _anchored(run, *deployed)


def _uninterrupted(run: Path, base: Path) -> Path:
    """The same anchored run trained again without interruption (and without anchoring) from its manifest, secrets
    and recorded registration block (keys.json): its sampling and noise keys derive from that block (prov.keys.v1),
    so the module's unanchored reference draws other batches; the killed run must equal this one bit for bit."""
    ref = base / "uninterrupted"
    ref.mkdir()
    for name in ("run.json", "secrets.json", "local.json", "keys.json"):
        shutil.copy2(run / name, ref / name)
    _prov(base, ["train", "--resume", str(ref), "--no-anchor", "--quiet"])
    return ref
