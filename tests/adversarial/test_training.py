"""A trainer that wants the DP badge without paying for it: it records honest DP parameters and trains otherwise,
claims another run's weights, or hands the auditor made-up statistics. Each dishonest lineage is built with the
project's own trainer (patched), anchored on a real anvil chain, and checked by `prov verify` in a fresh process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the dishonest trainer is the project's trainer (the train extra)")

from tests.fixtures.adversary import Lab, check_of, failed_checks, last_adapter

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.replay]


def test_no_noise_while_claiming_dp(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """σ = 1 recorded, no noise added: every exact field matches, the whole-state replay does not."""
    import torch

    from training import engine

    monkeypatch.setattr(engine, "step_noise",
                        lambda secrets, step, *, count, std, dtype: torch.zeros(count, dtype=dtype))
    run = lab.train("no-noise")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 1 and failed_checks(report) == ["replay"], report["checks"]
    assert check_of(report, "steps")["status"] == "passed"
    first = next(s for s in report["replay"]["segments"] if s["status"] == "failed")
    # Step 0's loss is computed before any update; from step 1 on the losses (hence the statistics commitment)
    # differ, and replay names the first diverging step.
    assert first["to_index"] == 1 and first["first_divergence"] == {**first["first_divergence"], "step": 1,
                                                                    "field": "stats"}


def test_clipping_looser_than_recorded(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """C = 0.001 recorded (so clipping bites on this model), gradients clipped at 0.1: the noise, scaled by the
    recorded C, no longer hides them."""
    from training import dpstep

    original = dpstep.StepMath.__init__

    def loose(self: Any, **kwargs: Any) -> None:
        if kwargs.get("max_grad_norm") is not None:
            kwargs["max_grad_norm"] = kwargs["max_grad_norm"] * 100
        original(self, **kwargs)

    monkeypatch.setattr(dpstep.StepMath, "__init__", loose)
    run = lab.train("clipping", **{"dp.max_grad_norm": 0.001})
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 1 and failed_checks(report) == ["replay"], report["checks"]


def test_bigger_batches_than_the_recorded_sample_rate(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan says q = 8/256; the trainer samples more examples per step (less privacy amplification than
    claimed). The sampler is keyed by the committed seed, so every step's batch is recomputed: caught without
    replay."""
    from training import engine

    real = engine.Engine.indices

    def greedy(self: Any, step: int) -> list[int]:
        chosen = set(real(self, step))
        extra = [i for i in range(self.plan.dataset_size) if i not in chosen][:4]
        return sorted(chosen | set(extra))

    monkeypatch.setattr(engine.Engine, "indices", greedy)
    run = lab.train("greedy")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["steps"], report["checks"]
    assert "step 0: the logged example count" in check_of(report, "steps")["summary"]


def test_made_up_statistics_handed_to_the_auditor(lab: Lab) -> None:
    """The published record commits to each step's loss; a prettier loss curve given to the auditor does not open
    the commitments."""
    run = lab.train("stats")
    lab.finalize(run)
    stats = run / "stats.jsonl"
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    lines[2]["loss"] = repr(float(lines[2]["loss"]) / 2)
    stats.chmod(0o600)
    stats.write_text("".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in lines))
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["steps"], report["checks"]
    assert check_of(report, "steps")["summary"].startswith("step 2: the statistics given do not open")


def test_a_copied_registration_cannot_take_the_run(lab: Lab) -> None:
    """Front-running: another account copies the trainer's registration and checkpoint commits (same manifest, same
    digests) into runs of its own, earlier. The manifest names its owner, so the copy is listed and rejected and the
    trainer's own run is the lineage shown."""
    from provenance.hashing import Digest

    run = lab.train("owned")
    lab.finalize(run)
    manifest = json.loads((run / "run.json").read_bytes())
    assert manifest["owner"] == lab.registry.signer.address
    honest = lab.registry.claims(weights=_weights(run))[0]
    history = lab.registry.run(honest.run_key)
    thief = lab.registry.with_signer(_key(1))
    reg = history.registration
    key = thief.register_run(manifest["run_id"], manifest_digest=reg.manifest_digest,
                             base_model_digest=reg.base_model_digest, dataset_root=reg.dataset_root,
                             noise_seed_commitment=reg.noise_seed_commitment, manifest_cid=reg.manifest_cid).run_key
    for c in history.checkpoints:
        thief.commit_checkpoint(key, index=c.index, weights_digest=c.weights_digest, tensor_digest=c.tensor_digest,
                                checkpoint_digest=c.checkpoint_digest, log_size=c.log_size, log_root=c.log_root,
                                epsilon_micro=c.epsilon_micro, manifest_cid=c.manifest_cid)
    code, report = lab.verify(last_adapter(run))
    assert code == 0, report["checks"]
    assert report["run"]["owner"] == lab.registry.signer.address
    copy = next(c for c in report["claims"] if not c["selected"])
    assert copy["owner"] == thief.signer.address and not copy["selected"]
    assert isinstance(Digest.parse(report["subject"]["weights_digest"]), Digest)
    # asked for the thief's run itself (as if its copy came first), the copy is examined and rejected
    code, report = lab.verify(last_adapter(run), "--run", key.hex())
    assert code != 0, report["checks"]
    copy = next(c for c in report["claims"] if c["owner"] == thief.signer.address)
    assert "a copied registration" in copy["note"] and not copy["selected"], report["claims"]


def test_a_zero_step_checkpoint_is_refused_on_chain(lab: Lab) -> None:
    """A checkpoint that adds no step could hold anything without ever being replayed: the v2 registry refuses it."""
    from provenance.chain import InvalidLogSize
    from provenance.hashing import Digest

    run = lab.train("zero-step", **{"anchor.finalize": False})  # still open: only the zero-step rule can refuse it
    honest = lab.registry.claims(weights=_weights(run))[0]
    other = Digest.of(b"some other adapter")
    with pytest.raises(InvalidLogSize):
        lab.registry.commit_checkpoint(honest.run_key, index=honest.index + 1, weights_digest=other,
                                       tensor_digest=other, checkpoint_digest=other, log_size=honest.log_size,
                                       log_root=honest.log_root, epsilon_micro=honest.epsilon_micro,
                                       manifest_cid=honest.manifest_cid)


@pytest.mark.parametrize("old", ["v1", "v2"])
def test_an_older_record_slipped_into_a_v3_log(lab: Lab, old: str) -> None:
    """A v1 record (loss in clear, unsalted batch) or a v2 record (its example count in clear) in a v3 run's log,
    resealed before anchoring: refused."""
    from provenance.manifest import MANIFEST_NAME, hash_directory
    from provenance.records import StepRecord, StepRecordV1
    from provenance.steplog import encode_line

    run = lab.train("mixed", **{"anchor.enabled": False})
    ck = run / "checkpoints" / "000002"
    lines = (ck / "steps.jsonl").read_bytes().splitlines(keepends=True)
    first = json.loads(lines[0])
    record = first["record"]
    forged: StepRecord | StepRecordV1
    if old == "v1":
        forged = StepRecordV1(step=record["step"], batch=_digest(record["batch"]), examples=3,
                              lr=float(record["lr"]), loss=2.0, clipped_fraction=0.5,
                              noise_index=record["noise_index"])
    else:
        forged = StepRecord(step=record["step"], batch=_digest(record["batch"]), examples=3, lr=float(record["lr"]),
                            noise_index=record["noise_index"], stats=_digest(record["stats"]))
    lines[0] = encode_line(forged, forged.leaf_hash(), bytes.fromhex(first["root"]))
    (ck / "steps.jsonl").write_bytes(b"".join(lines))
    (ck / MANIFEST_NAME).write_bytes(hash_directory(ck).encode())
    from training.config import AnchorConfig
    from training.trainer import resume

    resume(run, quiet=True, anchor=AnchorConfig(enabled=True, flush_timeout=120.0))
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run))
    assert code == 1 and failed_checks(report) == ["step_log"], report["checks"]


def _weights(run: Path) -> Any:
    from provenance.hashing import hash_file

    return hash_file(last_adapter(run))


def _digest(text: str) -> Any:
    from provenance.hashing import Digest

    return Digest.parse(text)


def _key(index: int) -> bytes:
    from provenance._chain.keys import dev_signer

    return bytes(dev_signer(index).account.key)


def test_a_delta_of_at_least_one_over_n_buys_no_dp_badge(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer lifts its own δ < 1/N rule and records δ = 0.01 (N = 256), so the accountant reports a smaller ε
    for a mechanism that may publish a whole record with probability 0.01. Everything else is honest; the privacy
    check fails it."""
    import dataclasses

    from training import plan, trainer
    from training.runinfo import read_manifest

    honest = plan.resolve

    def loose(cfg: Any, *, dataset_size: int) -> Any:
        return dataclasses.replace(honest(cfg, dataset_size=dataset_size), delta=0.01)

    monkeypatch.setattr(plan, "resolve", loose)
    monkeypatch.setattr(trainer, "resolve", loose)
    run = lab.train("delta", **{"training.steps": 6})
    assert float(read_manifest(run)["training"]["dp"]["delta"]) == 0.01
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["privacy"], report["checks"]
    assert "δ is at least 1/N" in check_of(report, "privacy")["summary"]
