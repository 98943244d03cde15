"""What a verdict on a merged model covers is what transformers loads (#20), against a real anvil chain.

The project's own trainer finalises the run with the merged directory's manifest (`prov.merged-dir.v1`); `prov
merge` writes that directory. An honest copy verifies and loads to the committed tensors and config. A dishonest
one changes what the model computes without touching the committed tensors (config, tokenizer, generation
settings, a redirect key, a shard or file outside the hashed set, a link out of the directory): each is FAILED with
the check that names it, and the behaviour change is shown by loading both with transformers and comparing logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="the trainer is the project's trainer (the train extra)")

from provenance import mergedir
from provenance.merge import write_merged
from tests.fixtures.adversary import Lab, check_of, failed_checks

pytestmark = [pytest.mark.chain, pytest.mark.slow]

PROMPT = [1, 5, 9, 42, 17, 3, 100, 7]


def _last(run: Path) -> Path:
    return sorted(p for p in (run / "checkpoints").iterdir() if p.name.isdigit())[-1]


def _logits(model_dir: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([PROMPT])).logits


def _edit_json(path: Path, **changes: Any) -> None:
    doc = json.loads(path.read_text())
    doc.update(changes)
    path.write_text(json.dumps(doc, indent=2))


def _honest(lab: Lab, tmp_path: Path, name: str) -> tuple[Path, Path]:
    run = lab.train(name)
    lab.finalize(run)
    return run, write_merged(lab.model, _last(run), tmp_path / "merged").path


def test_control_an_honest_merged_directory_verifies_and_loads_to_what_was_committed(lab: Lab,
                                                                                      tmp_path: Path) -> None:
    """The finalisation commits the directory manifest; the honest directory verifies with and without the base
    model; transformers loads exactly the committed tensors and the committed config; a re-sharded `prov merge`
    (same tensors, same files) verifies too."""
    import torch
    from safetensors.torch import load_file

    run, merged = _honest(lab, tmp_path, "honest")
    recorded = json.loads((run / "merged.json").read_bytes())
    jobs = [json.loads(p.read_bytes()) for p in sorted((run / "outbox" / "jobs").glob("*.json"))]
    history = lab.registry.run(bytes.fromhex(jobs[-1]["run_key"]))
    committed = mergedir.read_beside(merged)
    assert committed is not None and str(committed[1]) == recorded["manifest_digest"]
    assert str(history.finalization.merged_tensor_digest) == recorded["manifest_digest"]
    assert {f.path for f in committed[0].files} >= {"config.json", "generation_config.json", "tokenizer.json"}
    code, report = lab.verify(merged)
    assert code == 0 and check_of(report, "merged_files")["status"] == "passed", report["checks"]
    assert "prov.merged-dir.v1" in check_of(report, "record")["summary"]
    code, report = lab.verify(merged, "--base-model", str(lab.model), "--replay", "0")
    assert code == 0 and "registered base model's" in check_of(report, "merged_files")["summary"], report["checks"]
    # what transformers loads is what was committed: every tensor, and the committed config.json
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged, local_files_only=True)
    stored = load_file(str(merged / "model.safetensors"))
    state = model.state_dict()
    assert set(stored) == set(state) and all(torch.equal(state[k], stored[k]) for k in stored)
    config_entry = committed[0].file("config.json")
    assert config_entry is not None
    from provenance.hashing import hash_file

    assert hash_file(merged / "config.json") == config_entry.digest
    assert AutoConfig.from_pretrained(merged).to_dict()["hidden_act"] == json.loads(
        (lab.model / "config.json").read_text())["hidden_act"]
    resharded = write_merged(lab.model, _last(run), tmp_path / "resharded", max_shard_bytes=64 << 10)
    assert len(resharded.files) > 1 and resharded.manifest_digest == committed[1]
    code, report = lab.verify(resharded.path)
    assert code == 0, report["checks"]
    assert torch.equal(_logits(resharded.path), _logits(merged))


def _config(change: dict[str, Any]) -> Any:
    def attack(d: Path) -> None:
        _edit_json(d / "config.json", **change)
    return attack


def _generation(d: Path) -> None:
    _edit_json(d / "generation_config.json", temperature=0.01, do_sample=True, top_k=1)


def _tokenizer(d: Path) -> None:
    doc = json.loads((d / "tokenizer.json").read_text())
    vocab = doc["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[10:12]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens swapped: the same text feeds other ids
    (d / "tokenizer.json").write_text(json.dumps(doc))


def _redirect(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * 3
    (d / "weights").mkdir()
    save_file(tensors, str(d / "weights" / "model.safetensors"), metadata={"format": "pt"})
    _edit_json(d / "config.json", transformers_weights="weights/model.safetensors")


def _symlink_out(d: Path) -> None:
    """tokenizer.json becomes a link to a tampered tokenizer outside the directory (transformers follows it)."""
    outside = d.parent / f"outside-{d.name}"
    outside.mkdir()
    shutil.copyfile(d / "tokenizer.json", outside / "tokenizer.json")
    _tokenizer(outside)
    (d / "tokenizer.json").unlink()
    (d / "tokenizer.json").symlink_to(outside / "tokenizer.json")


def _extra_shard(d: Path) -> None:
    """Sharded as `prov merge` does, then the index names one more shard in a sub-folder holding another lm_head:
    the top-level files (the hashed tensors) are unchanged."""
    from safetensors.torch import load_file, save_file

    index = json.loads((d / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["lm_head.weight"]
    head = load_file(str(d / shard))["lm_head.weight"] * 3
    (d / "extra").mkdir()
    save_file({"lm_head.weight": head}, str(d / "extra" / "head.safetensors"), metadata={"format": "pt"})
    index["weight_map"]["lm_head.weight"] = "extra/head.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(index))


ATTACKS = {
    "activation": (_config({"hidden_act": "gelu"}), "merged_files", "config.json"),
    "rope": (_config({"rope_parameters": {"rope_theta": 10.0, "rope_type": "default"}}), "merged_files",
             "config.json"),
    "heads": (_config({"num_attention_heads": 2, "head_dim": 32, "num_key_value_heads": 1}), "merged_files",
              "config.json"),
    "generation": (_generation, "merged_files", "generation_config.json"),
    "tokenizer": (_tokenizer, "merged_files", "tokenizer.json"),
    "redirect": (_redirect, "merged_files", "transformers_weights"),
    "symlink": (_symlink_out, "merged_files", "symbolic link"),
    "extra-shard": (_extra_shard, "merged_files", "extra/"),
}


def test_dishonest_merged_directories_fail_with_the_named_check(lab: Lab, tmp_path: Path) -> None:
    """Each attack keeps the committed tensors and changes what the loaded model computes or emits; each is
    FAILED naming the check and what differs."""
    run, honest = _honest(lab, tmp_path, "attacked")
    reference = _logits(honest)
    sharded = write_merged(lab.model, _last(run), tmp_path / "sharded", max_shard_bytes=64 << 10).path
    for name, (attack, check_id, needle) in ATTACKS.items():
        target = tmp_path / f"attack-{name}"
        shutil.copytree(sharded if name == "extra-shard" else honest, target, symlinks=True)
        attack(target)
        code, report = lab.verify(target)
        assert code == 1 and failed_checks(report) == [check_id], (name, report["checks"])
        failed = check_of(report, check_id)
        assert needle in f"{failed['summary']} {failed['found']}", (name, failed)
        if name in ("generation", "tokenizer", "symlink"):
            continue  # not in the logits: generation settings and token ids change what is emitted, not computed
        import torch

        assert not torch.equal(_logits(target), reference), f"{name}: the attack did not change the model"


def test_a_generation_or_tokenizer_change_changes_what_people_get(lab: Lab, tmp_path: Path) -> None:
    """The two attacks the logits above do not show: the tokenizer maps the same text to other ids, and the
    generation settings change what generate() emits."""
    from transformers import AutoTokenizer, GenerationConfig

    _, honest = _honest(lab, tmp_path, "emitted")
    tampered = tmp_path / "tampered"
    shutil.copytree(honest, tampered)
    _tokenizer(tampered)
    _generation(tampered)
    text = "".join(AutoTokenizer.from_pretrained(honest).convert_ids_to_tokens(list(range(10, 14))))
    assert AutoTokenizer.from_pretrained(honest)(text)["input_ids"] != AutoTokenizer.from_pretrained(tampered)(
        text)["input_ids"]
    assert GenerationConfig.from_pretrained(honest).to_dict() != GenerationConfig.from_pretrained(tampered).to_dict()
    code, report = lab.verify(tampered, "--base-model", str(lab.model), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["merged_files"], report["checks"]


def _redirected_base(source: Path, target: Path, *, scale: float) -> Path:
    """The base model with config.json pointing transformers at `w/model.safetensors` (a sub-folder the top-level
    digest never covered), holding its weights with lm_head scaled by `scale`."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    tensors = load_file(str(target / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["lm_head.weight"] * scale
    (target / "w").mkdir()
    save_file(tensors, str(target / "w" / "model.safetensors"), metadata={"format": "pt"})
    _edit_json(target / "config.json", transformers_weights="w/model.safetensors")
    return target


def test_a_base_model_directory_that_redirects_the_weights_is_refused(lab: Lab, tmp_path: Path) -> None:
    """Two base directories whose top-level files are identical (one digest before #20) load different weights
    through `transformers_weights`. Training from one is refused (a one-line error naming the key), and verifying
    with one as --base-model FAILS `base_model`: its digest (config.json included) is not the registered one, and
    none of its configs is parsed (#22)."""
    import torch

    from provenance.errors import UsageError

    one = _redirected_base(lab.model, tmp_path / "base-one", scale=1.0)
    two = _redirected_base(lab.model, tmp_path / "base-two", scale=-1.0)
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    assert all((one / n).read_bytes() == (two / n).read_bytes() for n in ("config.json", "model.safetensors"))
    assert not torch.equal(_logits(one), _logits(two))  # same top-level files, other model
    with pytest.raises(UsageError, match="transformers_weights"):
        lab.train("redirected", **{"model.path": str(one)})
    run = lab.train("honest-base")
    lab.finalize(run)
    adapter = _last(run) / "adapter_model.safetensors"
    code, _ = lab.verify(adapter, "--base-model", str(lab.model), "--replay", "0")
    assert code == 0
    code, report = lab.verify(adapter, "--base-model", str(two), "--replay", "0")
    assert code == 1 and failed_checks(report) == ["base_model"], report["checks"]
    assert "not the one this run registered" in check_of(report, "base_model")["summary"]
