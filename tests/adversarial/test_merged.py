"""Merged models against a real anvil chain: the project's own trainer commits the merged weights' digest at
finalisation as it trains (through its outbox); a tampered or dishonest merge is then handed to `prov verify` in a
fresh process, which must name the check that catches it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer is the project's trainer (the train extra)")

from provenance.merge import merged_tensor_digest, write_merged
from tests.fixtures.adversary import Lab, check_of, failed_checks
from tests.fixtures.merge import alter_weight, encode

pytestmark = [pytest.mark.chain, pytest.mark.slow]


def _last(run: Path) -> Path:
    return sorted(p for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1]


def _dishonest_finalisation(monkeypatch: pytest.MonkeyPatch, *, model: Path | None = None,
                            adapter: Any = None) -> None:
    """Make the trainer commit, at finalisation, the merge of another adapter (`adapter(checkpoint_dir)` returns
    its directory) or into another base model (`model`) instead of its own."""
    from training import trainer

    def finalize(run_dir: Path, outbox: Any, *, model_dir: Path, checkpoint_dir: Path, base_model_digest: str) -> Any:
        source = adapter(checkpoint_dir) if adapter is not None else checkpoint_dir
        digest = merged_tensor_digest(model or model_dir, source / "adapter_model.safetensors",
                                      source / "adapter_config.json")
        outbox.enqueue_finalize(digest)
        return digest

    monkeypatch.setattr(trainer, "finalize_run", finalize)


def _as_before_merged_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """Write the run manifest as prov did before prov.merged-dir.v1 (no `formats.merged`): such a run's
    finalisation committed the merged tensors alone, which verify only with --base-model binding the files beside
    them (without it: INCONCLUSIVE). A current trainer can write the same manifest, so nothing more is trusted."""
    from training import runinfo

    monkeypatch.setattr(runinfo, "FORMATS", {k: v for k, v in runinfo.FORMATS.items() if k != "merged"})


def test_control_the_trainer_commits_the_merge_and_it_verifies(lab: Lab, tmp_path: Path) -> None:
    """Honest: the trainer's own outbox finalises the run with the merged digest; the merged model verifies, with
    the merge recomputed from the base model."""
    run = lab.train("honest")
    lab.finalize(run)  # already queued by the trainer: only mines the beacon blocks
    recorded = json.loads((run / "merged.json").read_bytes())["manifest_digest"]  # prov.merged-dir.v1 (#20)
    jobs = [json.loads(p.read_bytes()) for p in sorted((run / "outbox" / "jobs").glob("*.json"))]
    assert [(j["kind"], j["state"], j["merged"]) for j in jobs][-1] == ("finalize", "done", recorded)
    history = lab.registry.run(bytes.fromhex(jobs[-1]["run_key"]))
    assert str(history.finalization.merged_tensor_digest) == recorded
    merged = write_merged(lab.model, _last(run), tmp_path / "merged")
    code, report = lab.verify(merged.path, "--base-model", str(lab.model), "--replay", "0")
    assert code == 0 and check_of(report, "merge")["summary"].startswith("recomputed"), report["checks"]


def test_a_merged_model_with_one_weight_changed(lab: Lab, tmp_path: Path) -> None:
    """One weight of the shipped merged model is changed: no finalisation commits those tensors (`record`); with
    the base model and the run's adapter, the recomputed merge differs at that tensor (`merge`)."""
    run = lab.train("changed")
    lab.finalize(run)
    merged = write_merged(lab.model, _last(run), tmp_path / "merged")
    alter_weight(merged.path / "model.safetensors", "model.layers.0.mlp.down_proj.weight", delta=1e-3, index=7)
    code, report = lab.verify(merged.path)
    assert code == 1 and failed_checks(report) == ["record"], report["checks"]
    code, report = lab.verify(merged.path, "--base-model", str(lab.model), "--adapter",
                              str(_last(run) / "adapter_model.safetensors"), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["merge"], report["checks"]
    assert "model.layers.0.mlp.down_proj.weight[7]" in check_of(report, "merge")["expected"]


def test_a_merge_of_another_adapter_committed_for_this_run(lab: Lab, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer commits at finalisation the merge of another adapter (its own, with a backdoor added to every
    LoRA B) and ships that model, its metadata naming the run. The record is the owner's, so without the base model
    the verdict only says so (the merge check says it was not recomputed); recomputed from the registered base
    model and the committed adapter, the merge differs (`merge`)."""
    from provenance.safetensors import read_header, read_tensors

    def backdoored(checkpoint_dir: Path) -> Path:
        other = tmp_path / "other-adapter"
        if not other.exists():
            other.mkdir()
            source = checkpoint_dir / "adapter_model.safetensors"
            tensors = {n: (t + 0.05 if ".lora_B." in n else t).astype(np.float32)
                       for n, t in read_tensors(source.read_bytes()).items()}
            (other / "adapter_model.safetensors").write_bytes(encode(tensors, read_header(source).metadata))
            shutil.copyfile(checkpoint_dir / "adapter_config.json", other / "adapter_config.json")
        return other

    _dishonest_finalisation(monkeypatch, adapter=backdoored)
    _as_before_merged_dir(monkeypatch)
    run = lab.train("other-adapter")
    lab.finalize(run)
    shipped = write_merged(lab.model, backdoored(_last(run)), tmp_path / "shipped")
    run_id = json.loads((run / "run.json").read_bytes())["run_id"]
    assert read_header(shipped.path / "model.safetensors").metadata["prov.run_id"] == run_id
    code, report = lab.verify(shipped.path)
    assert "not recomputed" in check_of(report, "merge")["summary"]
    # committed the older way (tensors only): the files beside them are bound by nothing, so never VERIFIED (#20)
    assert code == 3 and report["verdict"] == "inconclusive", report["checks"]
    assert check_of(report, "merged_files")["status"] == "inconclusive"
    assert "not bound by any commitment" in check_of(report, "merged_files")["summary"]
    assert any("--base-model to recompute" in item for item in report["not_checked"])
    code, report = lab.verify(shipped.path, "--base-model", str(lab.model), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["merge"], report["checks"]
    assert "is not checkpoint" in check_of(report, "merge")["summary"]


def test_a_merge_committed_for_another_base_model(lab: Lab, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The run registers the lab's base model but commits at finalisation its adapter merged into another base
    model, and ships that. Recomputed from the registered base model, the merge differs (`merge`); handing the
    other base model instead fails `base_model`."""
    from training.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other-base", seed=1)
    _dishonest_finalisation(monkeypatch, model=other)
    _as_before_merged_dir(monkeypatch)
    run = lab.train("other-base")
    lab.finalize(run)
    shipped = write_merged(other, _last(run), tmp_path / "shipped")
    code, report = lab.verify(shipped.path, "--base-model", str(lab.model), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["merge"], report["checks"]
    code, report = lab.verify(shipped.path, "--base-model", str(other), "--replay", "0")
    assert code == 1 and "base_model" in failed_checks(report), report["checks"]
    assert check_of(report, "merge")["status"] == "not_run"


def test_a_current_run_finalised_with_the_tensors_alone(lab: Lab, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A downgrade: the run manifest declares prov.merged-dir.v1 finalisations (`formats.merged`), but the trainer
    commits the merged tensors alone, so that a config.json computing something else could ship beside the honest
    weights and verify "tensors only". The promise is in the registered manifest: `merged_files` FAILS, with or
    without the base model, while the tensors themselves are the honest merge (`merge` passes)."""
    _dishonest_finalisation(monkeypatch)
    run = lab.train("tensors-only")
    assert json.loads((run / "run.json").read_bytes())["formats"]["merged"] == "prov.merged-dir.v1"
    lab.finalize(run)
    shipped = write_merged(lab.model, _last(run), tmp_path / "shipped")
    config = json.loads((shipped.path / "config.json").read_bytes())
    (shipped.path / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    code, report = lab.verify(shipped.path)
    assert code == 1 and failed_checks(report) == ["merged_files"], report["checks"]
    assert "declares prov.merged-dir.v1" in check_of(report, "merged_files")["summary"]
    code, report = lab.verify(shipped.path, "--base-model", str(lab.model), "--replay", "0")
    assert code == 1 and "merged_files" in failed_checks(report), report["checks"]
    assert check_of(report, "merge")["status"] == "passed", report["checks"]


def test_a_strangers_finalisation_of_the_victims_directory_manifest(lab: Lab, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The victim's run was finalised the older way (tensors only). A stranger finalises a run of its own with the
    digest of the victim's published merged directory's manifest (no front-running needed). Every lookup's claims
    are candidates together, so the claim the directory's metadata names is the one verified: the victim's run,
    never the stranger's with its ε and data (found in review: the first lookup with any claim used to decide)."""
    from provenance import mergedir
    from training import trainer

    honest_finalize = trainer.finalize_run
    _dishonest_finalisation(monkeypatch)  # tensors only, as before prov.merged-dir.v1
    _as_before_merged_dir(monkeypatch)
    victim = lab.train("victim")
    lab.finalize(victim)
    shipped = write_merged(lab.model, _last(victim), tmp_path / "shipped")
    target = mergedir.of_directory(shipped.path, shipped.tensor_digest).digest()  # what the directory binds

    def stranger_finalize(run_dir: Path, outbox: Any, **_: Any) -> Any:
        outbox.enqueue_finalize(target)
        return target

    monkeypatch.setattr(trainer, "finalize_run", stranger_finalize)
    stranger = lab.train("stranger", **{"training.seed": 7})
    lab.finalize(stranger)
    monkeypatch.setattr(trainer, "finalize_run", honest_finalize)
    code, report = lab.verify(shipped.path)
    victim_id = json.loads((victim / "run.json").read_bytes())["run_id"]
    # the victim's claim; its files beside the tensors are bound by nothing without the base model (inconclusive)
    assert code == 3 and report["run"]["run_id"] == victim_id, (report["run"], report["claims"])
    assert check_of(report, "merged_files")["status"] == "inconclusive", report["checks"]
    assert len(report["claims"]) == 2 and any(not c["selected"] for c in report["claims"])
    code, report = lab.verify(shipped.path, "--base-model", str(lab.model), "--replay", "0")
    assert code == 0 and report["run"]["run_id"] == victim_id, (report["run"], report["claims"])
