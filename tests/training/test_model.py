"""Base-model checks and digest, the tiny model builder, and the refusal of pickle-only models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from provenance.basemodel import base_model_manifest, base_model_summary, check_model_dir
from provenance.errors import UsageError
from provenance.hashing import hash_file


def test_tiny_model_has_expected_files_and_reloads(tiny_model_dir: Path) -> None:
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    from training.model import load_base_model

    model, tokenizer = load_base_model(tiny_model_dir)
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert model.config._attn_implementation == "eager"
    assert tokenizer.pad_token_id == 0


def test_tiny_model_is_deterministic(tiny_model_dir: Path, tmp_path: Path) -> None:
    from training.tiny import build_tiny_model

    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert hash_file(again / name) == hash_file(tiny_model_dir / name), name
    with pytest.raises(UsageError, match="not empty"):
        build_tiny_model(again)


def test_base_digest_covers_weights_config_tokenizer_only(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(tiny_model_dir, copy)
    digest = base_model_manifest(copy).digest()
    assert digest == base_model_manifest(tiny_model_dir).digest()
    (copy / "README.md").write_text("hello")
    assert base_model_manifest(copy).digest() == digest
    summary = base_model_summary(copy)
    assert summary["architecture"] == "LlamaForCausalLM" and summary["digest"] == str(digest)
    for name in ("config.json", "tokenizer.json"):
        path = copy / name
        original = path.read_bytes()
        path.write_bytes(original.replace(b"}", b" }", 1))
        assert base_model_manifest(copy).digest() != digest, name
        path.write_bytes(original)


def test_model_directory_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        check_model_dir(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_model_dir(tmp_path / "file")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match=r"no config\.json"):
        check_model_dir(empty)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(UsageError, match="pickle"):
        check_model_dir(pickled)


def test_unknown_lora_target_is_named(tiny_model_dir: Path) -> None:
    from training.config import LoraSettings
    from training.model import add_lora, load_base_model

    model, _ = load_base_model(tiny_model_dir)
    with pytest.raises(UsageError, match="wq_proj"):
        add_lora(model, LoraSettings(target_modules=("q_proj", "wq_proj")), seed=0)
