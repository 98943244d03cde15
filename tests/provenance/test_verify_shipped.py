"""Shipped adapter directories and checkpoint directories on the in-process chain: every file a loader reads from
what the auditor holds must be the committed checkpoint's file of that name (provenance._verify.files); files no
loader reads are listed; a checkpoint directory without its adapter gets a report, not a usage error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the tiny run is trained by the project's trainer (the train extra)")

from provenance._verify.subject import load_subject
from provenance.errors import UsageError
from tests.fixtures.verify import VerifyEnv, check, failed, last

pytestmark = pytest.mark.replay


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_run: Any) -> tuple[VerifyEnv, Path]:
    env = VerifyEnv(tmp_path_factory.mktemp("shipped"))
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    return env, run


def shipped(source: Path, dest: Path, *names: str) -> Path:
    dest.mkdir()
    for name in names:
        shutil.copyfile(source / name, dest / name)
    return dest


def test_the_honest_two_file_directory_verifies(world: tuple[VerifyEnv, Path], tmp_path: Path) -> None:
    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_model.safetensors", "adapter_config.json")
    (ship / "README.md").write_text("# my adapter\n", encoding="utf-8")
    (ship / ".DS_Store").write_bytes(b"\0")  # hidden files and directories: no loader reads them
    (ship / ".git").mkdir()
    assert load_subject(ship).kind == "adapter_dir"
    report = env.verify(ship, replay="0")
    assert report["verdict"] == "verified", report["checks"]
    assert report["subject"]["kind"] == "adapter_dir"
    assert "adapter_config.json, adapter_model.safetensors" in check(report, "checkpoint")["summary"]
    assert any("README.md" in w and ".DS_Store" in w and ".git/" in w for w in report["warnings"])


@pytest.mark.parametrize("change", ["lora_alpha", "use_rslora", "target_modules"])
def test_a_changed_adapter_config_fails_the_checkpoint_check(world: tuple[VerifyEnv, Path], tmp_path: Path,
                                                             change: str) -> None:
    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_model.safetensors", "adapter_config.json")
    config = json.loads((ship / "adapter_config.json").read_bytes())
    config[change] = {"lora_alpha": 64, "use_rslora": True,
                      "target_modules": [*config["target_modules"], "o_proj"]}[change]
    (ship / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    report = env.verify(ship, replay="0")
    assert report["verdict"] == "failed" and failed(report) == ["checkpoint"], report["checks"]
    assert "adapter_config.json is not the committed checkpoint's" in check(report, "checkpoint")["summary"]


@pytest.mark.parametrize(("name", "words"), [("tokenizer_config.json", "AutoPeftModelForCausalLM"),
                                             ("adapter_model.bin", "pickle"),
                                             ("config.json", "AutoPeftModelForCausalLM"),
                                             ("extra.safetensors", "not a file of the committed checkpoint")])
def test_a_file_a_loader_reads_that_no_commitment_binds_fails(world: tuple[VerifyEnv, Path], tmp_path: Path,
                                                              name: str, words: str) -> None:
    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_model.safetensors", "adapter_config.json")
    (ship / name).write_bytes(b"{}")
    report = env.verify(ship, replay="0")
    assert failed(report) == ["checkpoint"], report["checks"]
    assert words in check(report, "checkpoint")["summary"] and check(report, "checkpoint")["found"] == name


def test_a_sub_directory_or_special_file_is_refused(world: tuple[VerifyEnv, Path], tmp_path: Path) -> None:
    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_model.safetensors", "adapter_config.json")
    other = shipped(last(run), ship / "other", "adapter_model.safetensors", "adapter_config.json")
    report = env.verify(ship, replay="0")
    assert failed(report) == ["checkpoint"] and "other/ is a sub-directory" in check(report, "checkpoint")["summary"]
    shutil.rmtree(other)
    (ship / "tokenizer.json").symlink_to(ship / "missing")
    report = env.verify(ship, replay="0")
    assert failed(report) == ["checkpoint"] and "broken link" in check(report, "checkpoint")["summary"]


def test_a_checkpoint_directory_without_its_adapter_is_a_failed_check(world: tuple[VerifyEnv, Path],
                                                                      tmp_path: Path) -> None:
    env, run = world
    copy = tmp_path / "000003"
    shutil.copytree(last(run), copy)
    (copy / "adapter_model.safetensors").unlink()
    report = env.verify(copy, replay="0")
    assert report["exit_code"] == 1 and failed(report) == ["checkpoint"], report["checks"]
    assert "has no adapter_model.safetensors" in check(report, "checkpoint")["summary"]
    (copy / "state.json").unlink()  # the run's manifest still names the weights
    assert failed(env.verify(copy, replay="0")) == ["checkpoint"]


def test_a_checkpoint_directory_missing_or_changing_a_file_names_it(world: tuple[VerifyEnv, Path],
                                                                     tmp_path: Path) -> None:
    env, run = world
    copy = tmp_path / "000003"
    shutil.copytree(last(run), copy)
    assert env.verify(copy, replay="0")["verdict"] == "verified"
    (copy / "steps.jsonl").unlink()
    report = env.verify(copy, replay="0")
    assert failed(report) == ["checkpoint"] and "lacks steps.jsonl" in check(report, "checkpoint")["summary"]
    shutil.copyfile(last(run) / "steps.jsonl", copy / "steps.jsonl")
    (copy / "prov-checkpoint.json").write_bytes(b'{"files":[],"format":"prov.checkpoint.v1"}')
    report = env.verify(copy, replay="0")
    assert failed(report) == ["checkpoint"] and "another checkpoint" in check(report, "checkpoint")["summary"]


def test_a_lone_file_with_a_differing_config_beside_it_fails(world: tuple[VerifyEnv, Path], tmp_path: Path) -> None:
    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_model.safetensors", "adapter_config.json",
                   "prov-checkpoint.json")
    report = env.verify(ship / "adapter_model.safetensors", replay="0")
    assert report["verdict"] == "verified"
    assert "beside it is the committed one" in check(report, "checkpoint")["summary"]
    config = json.loads((ship / "adapter_config.json").read_bytes())
    (ship / "adapter_config.json").write_text(json.dumps({**config, "lora_alpha": 64}), encoding="utf-8")
    (ship / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    report = env.verify(ship / "adapter_model.safetensors", replay="0")
    assert failed(report) == ["checkpoint"], report["checks"]
    assert "adapter_config.json beside this file" in check(report, "checkpoint")["summary"]
    (ship / "adapter_config.json").unlink()
    report = env.verify(ship / "adapter_model.safetensors", replay="0")
    assert report["verdict"] == "verified" and "not bound here" in check(report, "checkpoint")["summary"]
    assert any("tokenizer_config.json" in w and "not bound" in w for w in report["warnings"])


def test_a_pickle_only_adapter_directory_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04.")
    with pytest.raises(UsageError, match="pickle that prov never loads"):
        load_subject(tmp_path)


def copy_run_to(thief: Any, honest: Any) -> None:
    """Register the same (owner-less) manifest under the thief's account and commit every checkpoint the honest
    run committed, as a copier watching the chain can."""
    run = honest.registration
    key = thief.register_run(run.run_id, manifest_digest=run.manifest_digest,
                             base_model_digest=run.base_model_digest, dataset_root=run.dataset_root,
                             noise_seed_commitment=run.noise_seed_commitment, manifest_cid=run.manifest_cid).run_key
    for c in honest.checkpoints:
        thief.commit_checkpoint(key, index=c.index, weights_digest=c.weights_digest, tensor_digest=c.tensor_digest,
                                checkpoint_digest=c.checkpoint_digest, log_size=c.log_size, log_root=c.log_root,
                                epsilon_micro=c.epsilon_micro, manifest_cid=c.manifest_cid)


def test_an_owner_less_run_registered_by_two_accounts_is_inconclusive(tmp_path: Path, tiny_run: Any) -> None:
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    assert json.loads((run / "run.json").read_bytes())["owner"] is None  # trained with anchoring off
    env.anchor(run)
    adapter = last(run) / "adapter_model.safetensors"
    assert env.verify(adapter, replay="0")["verdict"] == "verified"
    honest = env.registry.claims(weights=load_subject(adapter).weights_digest)[0]
    copy_run_to(env.registry.with_signer(env.registry.dev_keys()[2]), env.registry.run(honest.run_key))
    report = env.verify(adapter, replay="0")
    assert report["verdict"] == "inconclusive" and report["exit_code"] == 3, report["checks"]
    record = check(report, "record")
    assert record["status"] == "inconclusive" and "names no owner" in record["summary"]
    assert len(report["claims"]) == 2 and not failed(report)


def test_auto_peft_loads_the_checkpoint_and_final_verifies(world: tuple[VerifyEnv, Path], tiny_model_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """prov.adapter.v2: AutoPeftModelForCausalLM loads a checkpoint directory as it is (the base model found by the
    directory name its config records, from the working directory), to the committed tensors; RUN/final/ is the
    last checkpoint's adapter as a plain PEFT directory and verifies as a shipped adapter."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file

    env, run = world
    config = json.loads((last(run) / "adapter_config.json").read_bytes())
    assert config["task_type"] == "CAUSAL_LM" and config["base_model_name_or_path"] == tiny_model_dir.name
    monkeypatch.chdir(tiny_model_dir.parent)
    model = AutoPeftModelForCausalLM.from_pretrained(str(last(run)), local_files_only=True)
    committed = load_file(str(last(run) / "adapter_model.safetensors"))
    loaded = {n.replace(".default.", "."): p for n, p in model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(committed) and all(torch.equal(loaded[n], committed[n]) for n in committed)
    final = run / "final"
    assert sorted(p.name for p in final.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    report = env.verify(final, replay="0")
    assert report["verdict"] == "verified" and report["subject"]["kind"] == "adapter_dir", report["checks"]


def test_a_run_in_the_v1_adapter_layout_still_replays(tmp_path: Path, tiny_config: Any, tiny_model_dir: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs written before prov.adapter.v2 (no formats.adapter: the digest as base_model_name_or_path) are rebuilt
    in their own layout, so checkpoint 0 and every segment still replay bit for bit."""
    from tests.fixtures.verify import data_options
    from training import runinfo
    from training.trainer import train

    monkeypatch.setattr(runinfo, "FORMATS", {k: v for k, v in runinfo.FORMATS.items() if k != "adapter"})
    monkeypatch.setenv("PROV_HOME", str(tmp_path / "home"))
    result = train(tiny_config(tmp_path / "old", **{"training.steps": 4, "training.checkpoint_every": 2}),
                   quiet=True)
    assert result.run_dir is not None
    config = json.loads((last(result.run_dir) / "adapter_config.json").read_bytes())
    assert config["base_model_name_or_path"].startswith("sha256:") and config["task_type"] is None
    env = VerifyEnv(tmp_path / "env")
    env.anchor(result.run_dir)
    report = env.verify(last(result.run_dir) / "adapter_model.safetensors", replay="all",
                        **data_options(result.run_dir, tiny_model_dir))
    assert check(report, "checkpoint_zero")["status"] == "passed", report["checks"]
    assert check(report, "replay")["status"] == "passed", report["checks"]


def test_a_committed_config_naming_another_base_model_fails(tmp_path: Path, tiny_run: Any) -> None:
    """A dishonest trainer commits (resealed before anchoring) an adapter_config.json whose base_model_name_or_path
    sends AutoPeftModelForCausalLM to another model than the manifest's base: caught at the commitments level."""
    from tests.fixtures.verify import reseal

    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    checkpoint = last(run)
    config = json.loads((checkpoint / "adapter_config.json").read_bytes())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.2-1B"
    (checkpoint / "adapter_config.json").write_text(json.dumps(config, sort_keys=True, separators=(",", ":")),
                                                    encoding="utf-8")
    reseal(checkpoint)
    env.anchor(run)
    report = env.verify(checkpoint, replay="0")
    assert failed(report) == ["checkpoint"], report["checks"]
    assert "another base model" in check(report, "checkpoint")["summary"]
    assert check(report, "checkpoint")["found"] == "meta-llama/Llama-3.2-1B"


@pytest.mark.parametrize(("change", "words"), [({"use_rslora": True}, "not the plain LoRA"),
                                               ({"lora_alpha": 64}, "another lora_alpha"),
                                               ({"target_modules": ["o_proj", "q_proj", "v_proj"]},
                                                "another target_modules")])
def test_a_committed_config_other_than_the_manifests_lora_fails(tmp_path: Path, tiny_run: Any,
                                                                 change: dict[str, Any], words: str) -> None:
    """The trainer commits (resealed before anchoring) a config whose LoRA differs from the manifest's: caught at
    the commitments level, for the lone file as for the directory."""
    from tests.fixtures.verify import reseal

    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    checkpoint = last(run)
    config = {**json.loads((checkpoint / "adapter_config.json").read_bytes()), **change}
    (checkpoint / "adapter_config.json").write_text(json.dumps(config, sort_keys=True, separators=(",", ":")),
                                                    encoding="utf-8")
    reseal(checkpoint)
    env.anchor(run)
    for subject in (checkpoint, checkpoint / "adapter_model.safetensors"):
        report = env.verify(subject, replay="0")
        assert failed(report) == ["checkpoint"], report["checks"]
        assert words in check(report, "checkpoint")["summary"]


def test_a_re_encoded_adapter_in_a_shipped_directory_is_found_by_its_tensors(world: tuple[VerifyEnv, Path],
                                                                              tmp_path: Path) -> None:
    """PEFT's save_pretrained strips prov's metadata: the directory's adapter is the committed tensors re-encoded
    (a warning says so, as for a lone file); its config must still be the committed bytes."""
    from safetensors.numpy import load, save

    env, run = world
    ship = shipped(last(run), tmp_path / "ship", "adapter_config.json")
    tensors = load((last(run) / "adapter_model.safetensors").read_bytes())
    (ship / "adapter_model.safetensors").write_bytes(save(tensors, metadata={"format": "pt"}))
    report = env.verify(ship, replay="0")
    assert report["verdict"] == "verified", report["checks"]
    assert any("re-encoded" in w for w in report["warnings"])
    (ship / "adapter_model.safetensors").write_bytes(save({**tensors, next(iter(tensors)): tensors[next(iter(
        tensors))] * 2}, metadata={"format": "pt"}))
    assert failed(env.verify(ship, replay="0")) == ["record"]


def test_a_run_directory_is_a_usage_error_naming_what_to_verify(tiny_run: Any) -> None:
    with pytest.raises(UsageError, match="a run directory; verify its final adapter"):
        load_subject(tiny_run.run_dir)
