"""Shipped adapter directories against a real anvil chain, read as an adversary reads PEFT's loader: the files
PEFT 0.21 and AutoPeftModelForCausalLM open from an adapter directory are adapter_config.json (every LoRA setting),
adapter_model.safetensors — or adapter_model.bin through torch.load when the safetensors file is absent — and, for
the Auto class, the tokenizer files of that directory (which can grow the model's embeddings). Each dishonest
directory below loads in PEFT to a model that computes something else (logits compared on the tiny model), and
`prov verify DIR` in a fresh process must refuse it naming the `checkpoint` check; the honest two-file directory
verifies and loads to the committed tensors. Attribution: an owner-less run copied by another account is
INCONCLUSIVE, never VERIFIED."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the trainer and PEFT are the project's train extra")

from tests.fixtures.adversary import Lab, check_of, failed_checks

pytestmark = [pytest.mark.chain, pytest.mark.slow]

PROMPT = [[1, 17, 42, 99, 7, 3, 250, 11]]


def _last(run: Path) -> Path:
    return sorted(p for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1]


def _ship(run: Path, dest: Path) -> Path:
    """The two files a user ships (what `save_pretrained` writes, less its README), copied from the last checkpoint."""
    dest.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copyfile(_last(run) / name, dest / name)
    return dest


def _logits(base: Path, adapter_dir: Path, *, auto: bool = False) -> Any:
    """What PEFT computes for PROMPT with `adapter_dir` loaded on the base model (as a user loads it)."""
    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)  # LoRA init of modules the file does not hold
    if auto:
        config = json.loads((adapter_dir / "adapter_config.json").read_bytes())
        config["base_model_name_or_path"] = str(base)  # where the base model lies here
        (adapter_dir / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
        model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), local_files_only=True)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)), str(adapter_dir))
    model.eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(PROMPT)).logits


def _differs(a: Any, b: Any) -> bool:
    import torch

    return a.shape != b.shape or not torch.allclose(a, b, atol=1e-6)


def _edit_config(directory: Path, **changes: Any) -> None:
    path = directory / "adapter_config.json"
    config = json.loads(path.read_bytes())
    for key, value in changes.items():
        config[key] = value(config[key]) if callable(value) else value
    path.write_text(json.dumps(config, sort_keys=True, separators=(",", ":")), encoding="utf-8")


def test_shipped_directories_honest_and_dishonest(lab: Lab, tmp_path: Path) -> None:
    """One honestly trained, anchored, finalised run; the directories below are built from its committed files."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    run = lab.train("shipped")
    lab.finalize(run)
    honest = _ship(run, tmp_path / "honest")
    code, report = lab.verify(honest, "--replay", "0")
    assert code == 0 and report["subject"]["kind"] == "adapter_dir", report["checks"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(lab.model)), str(honest))
    committed = load_file(str(honest / "adapter_model.safetensors"))
    loaded = {n.replace(".default.", "."): p for n, p in model.named_parameters() if "lora_" in n}
    assert set(loaded) == set(committed) and all(torch.equal(loaded[n], committed[n]) for n in committed)
    reference = _logits(lab.model, honest)
    code, report = lab.verify(run / "final", "--replay", "0")  # the trainer's own plain PEFT directory
    assert code == 0, report["checks"]

    # The LoRA settings PEFT reads: scaling (lora_alpha, rank-stabilised), extra targets initialised at random.
    variants = {"lora_alpha": {"lora_alpha": lambda a: a * 4},
                "use_rslora": {"use_rslora": True},
                "target_modules": {"target_modules": lambda t: sorted({*t, "o_proj", "down_proj"}),
                                   "init_lora_weights": False}}
    for name, changes in variants.items():
        ship = _ship(run, tmp_path / name)
        _edit_config(ship, **changes)
        assert _differs(_logits(lab.model, ship), reference), f"{name}: PEFT computes the same"
        code, report = lab.verify(ship, "--replay", "0")
        assert code == 1 and failed_checks(report) == ["checkpoint"], (name, report["checks"])
        assert "adapter_config.json is not the committed checkpoint's" in check_of(report, "checkpoint")["summary"]
        code, report = lab.verify(ship / "adapter_model.safetensors", "--replay", "0")  # the lone file: named too
        assert code == 1 and "beside this file" in check_of(report, "checkpoint")["summary"], report["checks"]

    # A tokenizer PEFT's Auto class reads from the adapter directory: it grows the embeddings, other logits.
    from transformers import AutoTokenizer

    ship = _ship(run, tmp_path / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(lab.model))
    tokenizer.add_tokens([f"<extra_{i}>" for i in range(8)])
    tokenizer.save_pretrained(str(ship))
    assert (ship / "tokenizer_config.json").is_file()
    code, report = lab.verify(ship, "--replay", "0")
    assert code == 1 and failed_checks(report) == ["checkpoint"], report["checks"]
    assert "AutoPeftModelForCausalLM" in check_of(report, "checkpoint")["summary"]
    auto = _ship(run, tmp_path / "auto-honest")
    assert _differs(_logits(lab.model, ship, auto=True), _logits(lab.model, auto, auto=True))

    # A config.json beside: transformers' AutoModelForCausalLM then takes the directory itself as the base model
    # and loads the model weights found there under the adapter (another base, here one built with another seed).
    from training.tiny import build_tiny_model

    other_base = build_tiny_model(tmp_path / "other-base", seed=1)
    ship = _ship(run, tmp_path / "embedded-base")
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(other_base / name, ship / name)
    code, report = lab.verify(ship, "--replay", "0")
    assert code == 1 and failed_checks(report) == ["checkpoint"], report["checks"]
    assert check_of(report, "checkpoint")["found"] == "config.json"
    with torch.no_grad():
        embedded = AutoModelForCausalLM.from_pretrained(str(ship))(input_ids=torch.tensor(PROMPT)).logits
    assert _differs(embedded, reference)

    # adapter_model.bin beside: the pickle PEFT loads (torch.load) whenever the safetensors file is absent.
    ship = _ship(run, tmp_path / "pickle")
    other = {k: v + 0.05 if "lora_B" in k else v for k, v in committed.items()}
    torch.save(other, ship / "adapter_model.bin")  # the attacker's pickle; prov never loads it
    code, report = lab.verify(ship, "--replay", "0")
    assert code == 1 and failed_checks(report) == ["checkpoint"], report["checks"]
    assert "pickle" in check_of(report, "checkpoint")["summary"]
    (ship / "adapter_model.safetensors").unlink()
    assert _differs(_logits(lab.model, ship), reference)

    # A committed checkpoint directory without its adapter: a failed check with a report, never a usage error.
    copy = tmp_path / "checkpoint"
    shutil.copytree(_last(run), copy)
    (copy / "adapter_model.safetensors").unlink()
    code, report = lab.verify(copy, "--replay", "0")
    assert code == 1 and failed_checks(report) == ["checkpoint"], report["checks"]
    assert "has no adapter_model.safetensors" in check_of(report, "checkpoint")["summary"]


def _anchor_with_outbox(lab: Lab, run: Path) -> None:
    from provenance.anchor import Outbox

    manifest = json.loads((run / "run.json").read_bytes())
    with Outbox.open(run, chain=lab.rpc_url, registry=str(lab.registry.address), store=lab.store_spec) as box:
        box.enqueue_run(run_id=bytes.fromhex(manifest["run_id"]), manifest_path=run / "run.json")
        for ck in sorted(p for p in (run / "checkpoints").iterdir() if p.name.isdigit()):
            box.enqueue_checkpoint(index=int(ck.name), checkpoint_dir=ck)
        assert box.flush(timeout=120), box.status_line()


def test_an_owner_less_run_front_run_by_another_account_is_inconclusive(lab: Lab, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A run trained with anchoring off names no owner. Before its trainer anchors it, another account that got
    hold of the run directory (the manifest and checkpoints are public once shared) anchors a copy first with its
    own outbox; then the trainer anchors. The earliest claim is the copier's, and the manifest cannot say which
    account trained the run: INCONCLUSIVE naming `record` (it used to verify with the copier as owner and a
    warning). The trainer itself no longer writes owner-less anchored runs (`training.rundir.run_owner`)."""
    from provenance._chain.keys import ENV_KEY, dev_signer
    from training.trainer import train

    result = train(lab.make_config(lab.home / "ownerless", **{"anchor.enabled": False}), quiet=True)
    run = Path(result.run_dir)
    assert json.loads((run / "run.json").read_bytes())["owner"] is None
    copy = tmp_path / "copied-run"
    copy.mkdir()
    shutil.copyfile(run / "run.json", copy / "run.json")
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    thief = dev_signer(2)
    monkeypatch.setenv(ENV_KEY, thief.account.key.hex())
    _anchor_with_outbox(lab, copy)  # the copier's registration and commits come first
    monkeypatch.delenv(ENV_KEY)
    _anchor_with_outbox(lab, run)  # the trainer's, from dev account 0
    lab.mine(2)
    code, report = lab.verify(_last(run) / "adapter_model.safetensors", "--replay", "0")
    assert code == 3 and report["verdict"] == "inconclusive", report["checks"]
    record = check_of(report, "record")
    assert record["status"] == "inconclusive" and "names no owner" in record["summary"]
    assert thief.address in record["summary"] and dev_signer(0).address in record["summary"]
    assert report["run"]["owner"] == thief.address  # the earliest claim: the copier's, hence not verified
    assert len(report["claims"]) == 2 and not failed_checks(report)
