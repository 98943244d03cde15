"""The README's auditor section, tried as a separate party: the trainer anchors a run on a real anvil and hands over
`prov bundle` (public) and a private kit; the auditor runs `prov verify` in a new directory with no `.prov`, another
HOME, no PROV_HOME, holding only the bundle, the adapter and (for the data level) the kit, base model and data.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the trainer's side trains: install the train extra (scripts/setup does)")

pytestmark = [pytest.mark.chain, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def run_prov(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provenance", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def auditor_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROV_")}
    return {**env, "HOME": str(home), "PYTHONPATH": str(REPO), **extra}


def test_an_auditor_verifies_from_the_bundle_alone(lab: Any, tmp_path: Path) -> None:
    from tests.fixtures.adversary import last_adapter

    run_dir = lab.train("run", **{"training.steps": 4, "training.checkpoint_every": 2})
    lab.finalize(run_dir)
    trainer_env = {**os.environ, "PROV_HOME": str(lab.home / ".prov"), "PYTHONPATH": str(REPO)}
    done = run_prov(lab.home, trainer_env, "bundle", str(run_dir), "--out", "run.car", "--kit", "kit", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    coords = summary["coordinates"]
    assert coords["registry"].lower() == str(lab.registry.address).lower() and coords["chain_id"] == 31337
    assert coords["rpc_hint"] == lab.rpc_url and len(coords["checkpoints"]) == 3
    bundle_bytes = (lab.home / "run.car").read_bytes()
    secrets = json.loads((run_dir / "secrets.json").read_text())
    for value in secrets.values():  # nothing private in the public bundle
        if isinstance(value, str) and len(value) >= 32:
            assert value.encode() not in bundle_bytes and bytes.fromhex(value) not in bundle_bytes
    kit = lab.home / "kit"
    assert sorted(p.name for p in kit.iterdir()) == ["PRIVATE-AUDITOR-KIT.txt", "secrets.json", "stats.jsonl"]
    assert stat.S_IMODE((kit / "secrets.json").stat().st_mode) == 0o600

    # The auditor's machine: a fresh directory, another HOME, no .prov anywhere above, no PROV_* variables.
    auditor = tmp_path / "auditor"
    (auditor / "home").mkdir(parents=True)
    assert not any((p / ".prov").exists() for p in (auditor, *auditor.parents))
    shutil.copy(lab.home / "run.car", auditor / "run.car")
    shutil.copy(last_adapter(run_dir), auditor / "adapter_model.safetensors")
    env = auditor_env(auditor / "home")

    public = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "run.car", "--rpc",
                      lab.rpc_url, "--auditor", "ACME Audit", "--json")
    report = json.loads(public.stdout)
    assert public.returncode == 0 and report["verdict"] == "verified", (public.stderr, report["checks"])
    assert report["chain"]["genesis_hash"] == coords["genesis_hash"]
    assert report["chain"]["expected_chain_id"] == 31337 and report["chain"]["expected_registry"]
    audit = report["audit"]
    assert audit["auditor"] == "ACME Audit" and audit["statistics"] == "none"
    assert audit["command"].startswith("prov verify adapter_model.safetensors --rpc http://127.0.0.1:")
    assert "--bundle run.car" in audit["command"] and str(tmp_path) not in audit["command"]
    from provenance.report import report_id

    assert audit["report_id"] == report_id(report)

    # PROV_RPC_URL instead of --rpc; without either, the error names the trainer's hint and what to do
    via_env = run_prov(auditor, {**env, "PROV_RPC_URL": lab.rpc_url}, "verify", "adapter_model.safetensors",
                       "--bundle", "run.car", "--json")
    assert via_env.returncode == 0, via_env.stderr
    no_rpc = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "run.car")
    assert no_rpc.returncode == 2 and "pass --rpc URL or set PROV_RPC_URL" in no_rpc.stderr
    assert lab.rpc_url in no_rpc.stderr and "Traceback" not in no_rpc.stderr
    wrong = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "run.car", "--rpc",
                     lab.rpc_url, "--expect-chain-id", "1")
    assert wrong.returncode == 2 and "differs from the bundle's 31337" in wrong.stderr

    # The data level: the private kit, the base model and the data, handed over privately.
    shutil.copytree(kit, auditor / "kit")
    shutil.copytree(lab.model, auditor / "base-model")
    data = json.loads((run_dir / "local.json").read_text())["data"]
    shutil.copy(data, auditor / "data.jsonl")
    full = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "run.car", "--rpc",
                    lab.rpc_url, "--base-model", "base-model", "--data", "data.jsonl", "--secrets",
                    "kit/secrets.json", "--replay", "all", "--report", "audit.html", "--json")
    report = json.loads(full.stdout)
    page = (auditor / "audit.html").read_text(encoding="utf-8")
    assert "Contains private statistics" in page and "which was not read" not in page  # Annex IV from the manifest
    assert full.returncode == 0 and report["verdict"] == "verified", (full.stderr, report["checks"])
    assert report["level"]["name"] == "full", report["level"]
    assert report["audit"]["statistics"] == "private" and report["series"]["loss"]  # the kit's stats.jsonl
    published = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "run.car", "--rpc",
                         lab.rpc_url, "--base-model", "base-model", "--data", "data.jsonl", "--secrets",
                         "kit/secrets.json", "--replay", "0", "--public", "--json")
    report = json.loads(published.stdout)
    assert published.returncode == 0 and report["series"]["loss"] is None and report["audit"]["statistics"] == "none"

    # A bundle whose blocks were altered is refused on import (every block is re-hashed against its CID).
    bad = bytearray(bundle_bytes)
    bad[len(bad) // 2] ^= 0x01
    (auditor / "bad.car").write_bytes(bytes(bad))
    tampered = run_prov(auditor, env, "verify", "adapter_model.safetensors", "--bundle", "bad.car", "--rpc",
                        lab.rpc_url)
    assert tampered.returncode == 2 and "Traceback" not in tampered.stderr, tampered.stderr
