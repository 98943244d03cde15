"""A dishonest trainer forges its lineage with the project's own trainer (patched), anchors it on a real anvil chain,
and hands the auditor everything an auditor asks for. `prov verify` in a fresh process must not say VERIFIED.

Each test names the hole it closes (issue #12) and asserts the check that catches it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the dishonest trainer is the project's trainer (the train extra)")

from tests.fixtures.adversary import Lab, check_of, failed_checks, last_adapter

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.replay]


def test_control_the_honest_run_verifies_fully_replayed(lab: Lab) -> None:
    """The same lab, an honest trainer: verified at the highest level (so every FAILED below is the attack's)."""
    run = lab.train("honest")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 0 and report["level"]["name"] == "full", report["checks"]
    assert report["chain"]["dev_chain"] and "local development chain" in report["level"]["text"]


def test_hole_1_checkpoint_zero_is_not_the_base_model_with_fresh_lora(lab: Lab,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoint 0 is a non-private, pre-trained adapter (LoRA B not zero); training after it is honest, so every
    later segment replays bit for bit. Rebuilding checkpoint 0 from the base model catches it."""
    import torch

    from training import engine, model

    real = model.add_lora

    def backdoored(*args: Any, **kwargs: Any) -> Any:
        peft_model = real(*args, **kwargs)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.add_(0.05)
        return peft_model

    monkeypatch.setattr(engine, "add_lora", backdoored)
    run = lab.train("zero")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 1 and failed_checks(report) == ["checkpoint_zero"], report["checks"]
    assert check_of(report, "replay")["status"] == "passed"  # the later segments are honest: only ckpt 0 lies
    code, report = lab.verify(last_adapter(run))
    assert code == 0 and check_of(report, "checkpoint_zero")["status"] == "not_run"
    assert "--base-model" in check_of(report, "checkpoint_zero")["summary"]


def test_hole_2_a_crafted_optimizer_state_cannot_hide_behind_honest_weights(lab: Lab) -> None:
    """The trainer rewrites checkpoint 1's optimizer state (weights untouched, resealed) and continues training from
    it, so the segments after it replay exactly. Only rebuilding the whole checkpoint 1 (not its weights) shows it
    was not produced by training from checkpoint 0."""
    import shutil

    from safetensors.numpy import load, save

    from provenance.manifest import MANIFEST_NAME, hash_directory
    from training.trainer import resume

    run = lab.train("optimizer", **{"anchor.enabled": False})
    ck1 = run / "checkpoints" / "000001"
    tensors = load((ck1 / "optimizer.safetensors").read_bytes())
    (ck1 / "optimizer.safetensors").write_bytes(save({k: v * 3 if v.dtype.kind == "f" and v.ndim else v
                                                      for k, v in tensors.items()}))
    (ck1 / MANIFEST_NAME).write_bytes(hash_directory(ck1).encode())
    for later in ("000002", "000003"):
        shutil.rmtree(run / "checkpoints" / later)
    from training.config import AnchorConfig

    resume(run, quiet=True, anchor=AnchorConfig(enabled=True, flush_timeout=120.0))
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 1 and failed_checks(report) == ["replay"], report["checks"]
    by_target = {s["to_index"]: s for s in report["replay"]["segments"]}
    assert by_target[1]["status"] == "failed"
    assert by_target[1]["first_divergence"]["field"] == "file optimizer.safetensors"
    assert by_target[2]["status"] == by_target[3]["status"] == "passed"


def test_hole_6_a_tiny_epsilon_committed_for_an_earlier_checkpoint(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """ε committed for checkpoint 1 is a tenth of what was spent (the final one is honest)."""
    from training import plan

    real = plan.EpsilonSchedule.at

    def understated(self: Any, steps: int) -> Any:
        value = real(self, steps)
        return value / 10 if value and steps == 2 else value

    monkeypatch.setattr(plan.EpsilonSchedule, "at", understated)
    run = lab.train("epsilon")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run))
    assert code == 1 and failed_checks(report) == ["privacy"], report["checks"]
    assert check_of(report, "privacy")["summary"].startswith("checkpoint 1: the committed ε is lower")


@pytest.mark.parametrize("recorded, verdict, check", [
    ({"cpu_capability": "AVX9000"}, "failed", "replay"),  # no machine has it: a way to escape replay
    ({"env": {"ATEN_CPU_CAPABILITY": "avx2", "PYTHONPATH": "/tmp/evil"}}, "failed", "replay"),  # code injection
])
def test_hole_4_recorded_settings_no_auditor_can_match(lab: Lab, monkeypatch: pytest.MonkeyPatch,
                                                       recorded: dict[str, Any], verdict: str, check: str) -> None:
    from training import determinism

    real = determinism.settings

    def bogus(**kwargs: Any) -> Any:
        return {**real(**kwargs), **recorded}

    monkeypatch.setattr(determinism, "settings", bogus)
    monkeypatch.setattr(determinism, "check", lambda manifest: [])  # the trainer's own guard, patched away too
    run = lab.train("determinism")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert (code, report["verdict"]) == ({"failed": 1}[verdict], verdict) and check in failed_checks(report), \
        report["checks"]
    assert "no machine can have" in check_of(report, check)["summary"]


def test_hole_4_a_cheat_behind_a_library_version_this_machine_lacks_is_inconclusive(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer adds no DP noise and records a plausible library version no auditor has, hoping the mismatch
    excuses the difference. Replay still runs and checks every exact field; the floating-point state differs, and
    since the environment cannot be matched the verdict is inconclusive (exit 3) — never verified — and says what
    to install. (On a machine that can match it, the same run fails: see tests/adversarial/test_training.py.)"""
    import torch

    from training import determinism, engine

    real = determinism.software_versions
    monkeypatch.setattr(determinism, "software_versions", lambda: {**real(), "peft": "0.99.0"})
    monkeypatch.setattr(determinism, "check", lambda manifest: [])
    monkeypatch.setattr(engine, "step_noise", lambda secrets, step, *, count, std, dtype: torch.zeros(count,
                                                                                                      dtype=dtype))
    run = lab.train("versions")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "all")
    assert code == 3 and report["verdict"] == "inconclusive", report["checks"]
    assert "peft==0.99.0" in " ".join(report["replay"]["environment"]["problems"])
    assert check_of(report, "steps")["status"] == "passed"  # the exact fields hold: only the noise was skipped


def test_hole_7_the_auditor_pins_the_chain(lab: Lab) -> None:
    run = lab.train("chain")
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), "--expect-chain-id", "1")
    assert code == 1 and failed_checks(report) == ["chain"]
    assert report["chain"]["genesis_hash"].startswith("0x") and report["chain"]["chain_id"] == 31337
    code, report = lab.verify(last_adapter(run), "--expect-chain-id", "31337", "--expect-registry",
                              "0x" + "00" * 20)
    assert code == 1 and failed_checks(report) == ["chain"]
    code, report = lab.verify(last_adapter(run), "--expect-chain-id", "31337", "--expect-registry",
                              str(lab.registry.address))
    assert code == 0 and "as expected" in check_of(report, "chain")["summary"]


def test_hole_5_the_sample_cannot_be_predicted_picked_or_re_rolled(lab: Lab) -> None:
    """A trainer knows every block hash before it ships its file (and picks them on its own chain), so it could
    finalise several runs, each forging another segment, and ship the one whose block-drawn sample misses its
    forgery. The draw therefore always mixes in a seed the verifier draws when it runs (recorded, so `--beacon`
    repeats it), with or without finalisation; and it covers the whole run, so shipping another checkpoint of the
    run changes nothing."""
    run = lab.train("beacon", **{"training.steps": 8})
    args = [*lab.auditor_args(run), "--replay", "1"]
    code, unfinalised = lab.verify(last_adapter(run), *args)
    assert code == 0 and unfinalised["level"]["name"] == "sampled", unfinalised["checks"]
    first = unfinalised["replay"]["beacon"]
    assert (first["source"], first["auditor_seed_origin"], first["block"]) == ("auditor", "drawn", None)
    lab.finalize(run)
    code, final = lab.verify(last_adapter(run), *args)
    beacon = final["replay"]["beacon"]
    assert code == 0 and final["level"]["name"] == "sampled", final["checks"]
    assert (beacon["source"], beacon["auditor_seed_origin"]) == ("chain+auditor", "drawn")
    assert beacon["auditor_seed"] != first["auditor_seed"]  # fresh randomness on every verification
    code, repeated = lab.verify(last_adapter(run), *args, "--beacon", beacon["auditor_seed"])
    assert code == 0 and repeated["replay"]["drawn"] == final["replay"]["drawn"]
    assert repeated["replay"]["beacon"]["auditor_seed_origin"] == "given"
    earlier = run / "checkpoints" / "000003" / "adapter_model.safetensors"
    code, report = lab.verify(earlier, *args, "--beacon", beacon["auditor_seed"])
    # the draw's randomness is the run's (a block after its finalisation, with the auditor's seed) whichever
    # checkpoint is shipped; what changes is only the segment every draw includes: the shipped file's own (#20)
    again = report["replay"]["beacon"]
    assert (again["block"], again["hash"], again["auditor_seed"]) == (beacon["block"], beacon["hash"],
                                                                      beacon["auditor_seed"])
    assert final["replay"]["drawn"] == [4] and report["replay"]["drawn"] == [3], (final["replay"], report["replay"])


def test_hole_3_9_an_example_swapped_in_one_step_is_caught_without_replay(lab: Lab,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """In step 3 the trainer feeds other tokens for one example than the committed record's. The every-step pass
    recomputes every batch from the data and secrets, so `--replay 0` catches it, whatever is sampled."""
    import numpy as np

    from training import engine

    real = engine.Engine.step

    def swap(self: Any, step: int, **kwargs: Any) -> Any:
        if step == 3:
            chosen = self.indices(step)
            batch = {k: np.array(v, copy=True) for k, v in self.batches(step, chosen).items()}
            if len(chosen):
                batch["input_ids"][0, 1] = (batch["input_ids"][0, 1] + 1) % 50
                batch["labels"][0, 1] = batch["input_ids"][0, 1]
            return real(self, step, indices=chosen, batch=batch)
        return real(self, step, **kwargs)

    monkeypatch.setattr(engine.Engine, "step", swap)
    run = lab.train("swap", **{"training.batch_size": 16})
    lab.finalize(run)
    code, report = lab.verify(last_adapter(run), *lab.auditor_args(run), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["steps"], report["checks"]
    assert check_of(report, "steps")["summary"].startswith("step 3: the logged batch commitment")


def test_hole_10_after_a_store_error_later_checks_say_why(lab: Lab) -> None:
    """The trainer withholds one checkpoint's content from the store: nothing can be verified (exit 2), and the
    checks that could not run name the store, not 'no on-chain record'."""
    import shutil

    run = lab.train("withheld")
    lab.finalize(run)
    store = lab.home / ".prov" / "store"
    ck2 = json.loads((run / "outbox" / "jobs" / "000003-checkpoint.json").read_bytes())["cid"]
    shutil.rmtree(store / "pins" / ck2, ignore_errors=True)
    (store / "pins" / ck2).unlink(missing_ok=True)
    for block in (store / "blocks").rglob(ck2):
        block.unlink()
    code, report = lab.verify(last_adapter(run))
    assert code == 2 and report["verdict"] == "error", report["checks"]
    assert check_of(report, "step_log")["summary"].startswith("could not run")
    assert "no on-chain record" not in json.dumps(report["checks"])


def _manifest(run: Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_bytes())


def _linked(source: Path, target: Path) -> Path:
    """A model directory laid out like a Hugging Face cache snapshot: every file a symbolic link."""
    target.mkdir()
    for file in source.iterdir():
        (target / file.name).symlink_to(file.resolve())
    return target


def test_hole_11_a_base_model_swapped_behind_symbolic_links(lab: Lab, tmp_path: Path) -> None:
    """The trainer fine-tunes model Y but claims X, both as directories of symbolic links (as every Hugging Face
    cache snapshot is). The base-model digest must cover the bytes behind the links: the auditor's genuine X does
    not match the registered digest, and Y does."""
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "model-y"
    other.mkdir()
    for file in lab.model.iterdir():
        (other / file.name).write_bytes(file.read_bytes())
    tensors = load_file(str(other / "model.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] * 1.5
    save_file(tensors, str(other / "model.safetensors"), metadata={"format": "pt"})
    y_links, x_links = _linked(other, tmp_path / "y-links"), _linked(lab.model, tmp_path / "x-links")
    run = lab.train("swapped-base", **{"model.path": str(y_links), "training.steps": 4})
    lab.finalize(run)
    auditor = lab.auditor_args(run)
    auditor[auditor.index("--base-model") + 1] = str(x_links)
    code, report = lab.verify(last_adapter(run), *auditor, "--replay", "0")
    assert code == 1 and failed_checks(report) == ["base_model"], report["checks"]
    auditor[auditor.index("--base-model") + 1] = str(y_links)
    code, report = lab.verify(last_adapter(run), *auditor, "--replay", "0")
    assert code == 0 and check_of(report, "base_model")["status"] == "passed", report["checks"]
