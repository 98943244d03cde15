"""A trainer grinds noise seeds before registering, looking for one whose Poisson sample puts a chosen record in
many steps (issue #23: sampling then depends on the data and the committed ε is void for that record). Under
`prov.keys.v1` (sampler `prov.poisson.v2`, noise `prov.noise.v3`) the per-step keys also derive from the hash of
the block that included the registration, so the ground seed buys nothing: the sample the verifier recomputes
from the chain puts the record in as many steps as chance gives. A trainer that samples with the ground
(pre-anchor) keys anyway fails the steps check. Built with the project's own trainer on a real anvil chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the grinding trainer is the project's trainer (the train extra)")

from provenance.sampler import poisson_indices
from provenance.secrets import Secrets, load_anchor
from tests.fixtures.adversary import Lab, check_of, failed_checks, last_adapter

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.replay]

TARGET = 7  # the record the trainer wants in many steps
DATASET_KEY = bytes(range(50, 82))


def _count(secret: bytes, steps: int, size: int, rate: float) -> int:
    return sum(TARGET in poisson_indices(secret, k, size, rate) for k in range(steps))


def _grind(steps: int, size: int, rate: float, *, want: int, tries: int = 200_000) -> bytes:
    """The first seed (of a fixed sequence) whose OLD-derivation sample has TARGET in at least `want` steps."""
    for n in range(tries):
        seed = n.to_bytes(32, "big")
        if _count(seed, steps, size, rate) >= want:
            return seed
    raise AssertionError(f"no seed in {tries} puts record {TARGET} in {want} of {steps} steps")


def _plan(lab: Lab) -> tuple[int, int, float]:
    """(steps, dataset size, sample rate) of the lab's tiny run, from a throw-away unanchored manifest."""
    run = lab.train("plan", **{"anchor.enabled": False, "training.steps": 1})
    training = json.loads((run / "run.json").read_bytes())["training"]
    steps = int(lab.make_config(None).training.steps)
    return steps, int(training["dataset_size"]), float(training["dp"]["sample_rate"])


def test_a_ground_seed_buys_nothing_under_anchored_keys(lab: Lab) -> None:
    steps, size, rate = _plan(lab)
    want = 3  # chance: about C(steps, 3)·q³ ≈ 6e-4 with q = 1/32 over 6 steps
    ground = _grind(steps, size, rate, want=want)
    run = lab.train("ground", secrets=Secrets(ground, DATASET_KEY))
    lab.finalize(run)
    manifest = json.loads((run / "run.json").read_bytes())
    assert manifest["formats"]["sampler"] == "prov.poisson.v2" and manifest["formats"]["noise"] == "prov.noise.v3"
    anchor = load_anchor(run)
    assert anchor is not None
    registered = lab.registry.run(lab.registry.run_key(manifest["run_id"], manifest["owner"])).registration
    block = lab.registry.block(anchor[1])
    assert registered.block_number == anchor[1]  # keys.json names the block that includes the registration ...
    assert block is not None and bytes(block.hash) == anchor[0]  # ... and that block's hash on the chain
    anchored = Secrets(ground, DATASET_KEY).anchored(anchor[0]).sample_secret
    assert _count(ground, steps, size, rate) >= want  # what the grinding bought under the old derivation
    assert _count(anchored, steps, size, rate) < want  # gone: the sample now follows the block hash
    # the verifier recomputes that sample from the chain's block hash and accepts the honest run
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 0 and report["verdict"] == "verified", report["checks"]
    assert check_of(report, "steps")["status"] == "passed"
    statement = " ".join(report["dp"]["statement"])
    assert "block that included the run's registration (prov.keys.v1)" in statement, statement


def test_sampling_with_the_ground_keys_anyway_fails(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The grinding trainer ignores the registration block and samples with its ground seed alone (the old
    derivation): the steps check, which recomputes each batch from the chain's block hash, refuses it."""
    from training import engine

    def ground_keys(self: Any, step: int) -> list[int]:
        return poisson_indices(self.secrets.noise_seed, step, self.plan.dataset_size, self.plan.sample_rate)

    monkeypatch.setattr(engine.Engine, "indices", ground_keys)
    run = lab.train("pre-anchor", secrets=Secrets(bytes(range(32)), DATASET_KEY))
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["steps"], report["checks"]


def test_keys_json_is_where_the_run_records_its_block(lab: Lab) -> None:
    """An anchored run records its registration block before step 0; a run with anchoring off keeps the pre-#23
    formats (no keys.json) and its report names the grinding limit."""
    run = lab.train("plain-off", **{"anchor.enabled": False, "training.steps": 2})
    manifest = json.loads((run / "run.json").read_bytes())
    assert manifest["formats"]["noise"] == "prov.noise.v2" and "sampler" not in manifest["formats"]
    assert not (Path(run) / "keys.json").exists()
