"""A `--base-model` directory's configs are the auditor's input but may come from anyone (#22): config.json and
tokenizer_config.json are parsed only through the bounded reader (a 200,000-deep config.json, a C-stack overflow
for a recursive parser, is one line naming the file), and transformers' own tokenizer loading (unbounded) runs only
once the directory has the registered base-model digest; otherwise the base-model check fails and the data checks
run without the tokenizer, saying so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="needs a trained run: install the train extra (scripts/setup does)")

from provenance import loaders
from provenance.basemodel import base_model_manifest
from provenance.errors import FormatError
from provenance.report import render_text
from tests.fixtures.verify import VerifyEnv, check, data_options, last

pytestmark = pytest.mark.slow

DEEP = b"[" * 200_000 + b"]" * 200_000


def test_another_models_tokenizer_is_never_loaded(tmp_path: Path, tiny_run: Any, tiny_model_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from provenance import basemodel

    other = tmp_path / "base"
    shutil.copytree(tiny_model_dir, other)
    config = json.loads((other / "tokenizer_config.json").read_bytes())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 77}))  # other digest
    loaded: list[Path] = []
    real = basemodel.load_tokenizer

    def spy(directory: Path) -> Any:
        loaded.append(Path(directory))
        return real(directory)

    monkeypatch.setattr(basemodel, "load_tokenizer", spy)
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    options = {**data_options(run, tiny_model_dir), "base_model": other, "replay": "0"}
    report = env.verify(last(run) / "adapter_model.safetensors", **options)
    assert report["verdict"] == "failed" and check(report, "base_model")["status"] == "failed"
    assert "not the one this run registered" in check(report, "base_model")["summary"]
    assert loaded == []  # transformers never read the unregistered tokenizer files
    steps = check(report, "steps")
    assert steps["status"] == "passed" and "batch contents not checked" in steps["summary"]
    assert "FAILED" in render_text(report)
    # With the registered base model the tokenizer is loaded and batch contents are checked.
    report = env.verify(last(run) / "adapter_model.safetensors", **{**options, "base_model": tiny_model_dir})
    assert report["verdict"] == "verified" and loaded == [tiny_model_dir]
    assert "batch contents" in check(report, "steps")["summary"]


def test_a_deep_config_in_another_directory_is_never_parsed(tmp_path: Path, tiny_run: Any, tiny_model_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = tmp_path / "base"
    shutil.copytree(tiny_model_dir, hostile)
    (hostile / "config.json").write_bytes(DEEP)
    env = VerifyEnv(tmp_path)
    run = env.copy(tiny_run.run_dir)
    env.anchor(run)
    options = {**data_options(run, tiny_model_dir), "base_model": hostile, "replay": "0"}
    parsed: list[Path] = []
    real = loaders.read_json
    monkeypatch.setattr(loaders, "read_json", lambda path, *a, **k: parsed.append(Path(path)) or real(path, *a, **k))
    report = env.verify(last(run) / "adapter_model.safetensors", **options)
    # not the registered directory: a report that says so, and its config.json was never parsed (#22)
    assert report["verdict"] == "failed" and check(report, "base_model")["status"] == "failed"
    assert "not the one this run registered" in check(report, "base_model")["summary"]
    assert hostile / "config.json" not in parsed


def test_the_registered_models_configs_are_still_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Once asked to (the digest matched), the configs are parsed bounded: a deep one is a one-line FormatError."""
    assert base_model_manifest(tiny_model_dir).digest() == base_model_manifest(tiny_model_dir, configs=False).digest()
    deep = tmp_path / "config.json"
    deep.write_bytes(DEEP)
    with pytest.raises(FormatError, match="nested deeper"):
        loaders.read_json(deep)
