"""Old runs stay auditable: a real run made by prov 0.1.0 (v1 formats, anchored in a v1 registry on anvil; see
tests/fixtures/v1run/README.md) is verified by today's verifier, in a fresh process, through the CLI.

What it must say: VERIFIED at the level v1 allows (commitments, and with the data, commitments and data — v1 runs
are not replayed by this version), with warnings that the registry is v1 and that the run published its per-step
statistics in clear; a tampered copy of the adapter fails; a wrong dataset fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from provenance._chain import anvil
from provenance.store import open_store

pytestmark = [pytest.mark.chain, pytest.mark.slow]

V1_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "v1run"


@pytest.fixture(scope="module")
def v1_world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh anvil loaded with the v1 chain state, and a local store with the v1 run's artifacts imported."""
    if anvil.find_anvil() is None:
        from tests.fixtures.chain import missing

        missing("anvil is not installed (scripts/setup installs it)")
    root = tmp_path_factory.mktemp("v1")
    state = root / "state.json"
    shutil.copyfile(V1_RUN / "chain-state.json", state)
    node = anvil.start(port=0, state_file=state)
    store = f"local:{root / 'store'}"
    with open_store(store) as opened:
        for car in sorted((V1_RUN / "cars").glob("*.car")):
            assert opened.import_car(car) == [car.stem]
    yield {"rpc": node.rpc_url, "store": store, "root": root, **json.loads((V1_RUN / "fixture.json").read_text())}
    node.stop()


def verify(world: dict[str, Any], path: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "provenance", "verify", str(path), "--rpc", world["rpc"], "--registry",
         world["registry"], "--store", world["store"], "--json", *extra],
        capture_output=True, text=True, env={**os.environ, "PROV_HOME": str(world["root"] / "home")}, timeout=600)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def test_a_v1_run_verifies_at_the_commitment_level_with_warnings(v1_world: dict[str, Any]) -> None:
    code, report = verify(v1_world, V1_RUN / "adapter_model.safetensors")
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    assert report["level"]["name"] == "commitments"
    assert report["chain"]["registry_version"] == 1
    warnings = " ".join(report["warnings"])
    assert "v1 ProvenanceRegistry" in warnings and "published in clear" in warnings
    assert report["run"]["formats"]["step"] == "prov.step.v1"
    assert report["series"]["loss_status"] == "public-v1" or report["series"]["loss"] is None
    assert statuses(report)["privacy"] == "passed" and report["dp"]["epsilon_checked"] == v1_world["checkpoints"]


def test_a_v1_run_with_its_data_verifies_data_but_is_not_replayed(v1_world: dict[str, Any]) -> None:
    auditor = ["--data", str(V1_RUN / "data.jsonl"), "--secrets", str(V1_RUN / "secrets.json"), "--base-model",
               str(V1_RUN / "model")]
    code, report = verify(v1_world, V1_RUN / "adapter_model.safetensors", *auditor, "--replay", "0")
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    checks = statuses(report)
    assert checks["dataset"] == "passed" and checks["steps"] == "passed" and checks["base_model"] == "passed"
    assert checks["replay"] == "not_run" and checks["checkpoint_zero"] == "not_run"
    assert report["level"]["name"] == "data"
    assert report["series"]["loss_status"] == "public-v1" and len(report["series"]["loss"]) == v1_world["steps"]
    # Replay asked for and impossible in these formats: never a verdict that hides it.
    code, report = verify(v1_world, V1_RUN / "adapter_model.safetensors", *auditor, "--replay", "all")
    assert code == 3 and report["verdict"] == "inconclusive", report["checks"]
    replay = next(c for c in report["checks"] if c["id"] == "replay")
    assert replay["status"] == "inconclusive" and "--replay 0" in replay["summary"]


def test_a_tampered_v1_adapter_and_wrong_data_fail(v1_world: dict[str, Any], tmp_path: Path) -> None:
    adapter = tmp_path / "adapter_model.safetensors"
    data = bytearray((V1_RUN / "adapter_model.safetensors").read_bytes())
    data[-2] ^= 1
    adapter.write_bytes(bytes(data))
    code, report = verify(v1_world, adapter)
    assert code == 1 and report["verdict"] == "failed" and statuses(report)["record"] == "failed"
    other = tmp_path / "data.jsonl"
    lines = (V1_RUN / "data.jsonl").read_text().splitlines()
    other.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")  # two records swapped
    code, report = verify(v1_world, V1_RUN / "adapter_model.safetensors", "--data", str(other), "--secrets",
                          str(V1_RUN / "secrets.json"))
    assert code == 1 and statuses(report)["dataset"] == "failed"
