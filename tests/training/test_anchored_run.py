"""A run anchored as it trains (in-process py-evm chain, the real outbox) gets keys fixed after registration
(`prov.keys.v1`): it waits for its registration before step 0, records the block in keys.json, samples and draws
noise with the anchored keys, and verifies fully replayed: the verifier reads the block hash from the chain and
hands it to the replay worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="training needs the train extra")

from provenance.sampler import poisson_indices
from provenance.secrets import load_anchor
from tests.fixtures.verify import VerifyEnv, data_options, failed, last, status

pytestmark = pytest.mark.replay


def _train_anchored(env: VerifyEnv, out: Path, tiny_config: Callable[..., Any], secrets: Any,
                    monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Path:
    from provenance.anchor import Outbox
    from training import trainer

    def open_outbox(run_dir: Path, config: Any, *, reuse_target: bool = False, start: bool = True) -> Any:
        box = Outbox.open(run_dir, chain="tester", registry_client=env.registry, store_client=env.store)
        if start:
            box.start()
        return box

    monkeypatch.setattr(trainer, "open_outbox", open_outbox)
    monkeypatch.delenv("PROV_PRIVATE_KEY", raising=False)
    cfg = tiny_config(out, **{"anchor.enabled": True, "anchor.chain": "tester", "anchor.flush_timeout": 120.0,
                              **overrides})
    result = trainer.train(cfg, secrets=secrets, quiet=True)
    assert result.anchored
    return Path(result.run_dir)


def test_anchored_keys_round_trip(tmp_path: Path, isolated_state: Path, tiny_config: Callable[..., Any],
                                  fixed_secrets: Any, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = VerifyEnv(tmp_path)
    run = _train_anchored(env, tmp_path / "run", tiny_config, fixed_secrets, monkeypatch)
    manifest = json.loads((run / "run.json").read_bytes())
    assert manifest["formats"]["noise"] == "prov.noise.v3" and manifest["formats"]["sampler"] == "prov.poisson.v2"
    anchor = load_anchor(run)
    assert anchor is not None
    history = env.registry.run(env.registry.run_key(manifest["run_id"], manifest["owner"]))
    assert history.registration.block_number == anchor[1]
    block = env.registry.block(anchor[1])
    assert block is not None and bytes(block.hash) == anchor[0]
    # the steps were sampled with the anchored keys, not the seed alone (stats.jsonl: the private counts)
    keyed = fixed_secrets.anchored(anchor[0]).sample_secret
    size, rate = manifest["training"]["dataset_size"], float(manifest["training"]["dp"]["sample_rate"])
    counts = [json.loads(line)["examples"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert counts == [len(poisson_indices(keyed, k, size, rate)) for k in range(len(counts))]
    assert counts != [len(poisson_indices(fixed_secrets.noise_seed, k, size, rate)) for k in range(len(counts))]
    env.mine(2)
    report = env.verify(last(run) / "adapter_model.safetensors", replay="all", **data_options(run, tiny_model_dir))
    assert report["verdict"] == "verified" and report["exit_code"] == 0, failed(report)
    assert set(status(report).values()) == {"passed"}
    assert all(s["bitwise"] for s in report["replay"]["segments"])
    assert any("registration (prov.keys.v1)" in line for line in report["dp"]["statement"])
    assert any("the trainer mines that block itself" in w for w in report["warnings"]), report["warnings"]


def test_a_run_without_its_registration_takes_no_step(tmp_path: Path, isolated_state: Path,
                                                      tiny_config: Callable[..., Any], fixed_secrets: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The registration never lands (a registry that refuses it): the run stops before step 0, one line naming
    the reason and how to continue; checkpoint 0 is in place and no step was logged."""
    from provenance.errors import UsageError

    def never(self: Any, timeout: float, **_: Any) -> None:
        return None

    monkeypatch.setattr("provenance.anchor.Outbox.registration_block", never)
    with pytest.raises(UsageError, match="derive from the block that includes its registration"):
        _train_anchored(VerifyEnv(tmp_path), tmp_path / "run", tiny_config, fixed_secrets, monkeypatch,
                        **{"anchor.register_timeout": 0.5})
    run = tmp_path / "run"
    assert (run / "checkpoints" / "000000").is_dir() and not (run / "keys.json").exists()
    assert not (run / "steps.jsonl").exists() or (run / "steps.jsonl").read_bytes() == b""
