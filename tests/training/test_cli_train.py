"""`prov init-model --tiny` and `prov train`: the zero-argument demo path and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from provenance.cli import main


def test_init_model_then_train_with_no_arguments(isolated_state: Path, tiny_model_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # `prov init-model --tiny` with no directory writes where `prov train` looks by default
    shutil.copytree(tiny_model_dir, isolated_state / "models" / "tiny")
    assert main(["train", "--steps", "2", "--checkpoint-every", "1", "--threads", "1", "--no-anchor", "--quiet",
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 2 and summary["checkpoints"] == 3 and float(summary["epsilon"]) > 0
    run_dir = Path(summary["run_dir"])
    assert run_dir.parent == isolated_state / "runs" and run_dir.name == summary["run_id"][:16]
    assert main(["train", "--resume", str(run_dir), "--quiet", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == summary["weights"]
    assert main(["train", "--resume", str(run_dir), "--steps", "3"]) == 2
    assert "--resume continues a run" in capsys.readouterr().err


def test_init_model_command(isolated_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init-model", "--tiny", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert main(["init-model", "--tiny", str(tmp_path / "m")]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "/definitely/not/here"], "model directory not found"),
        (["--data", "/definitely/not/here.jsonl"], "dataset not found"),
        (["--noise-multiplier", "1", "--target-epsilon", "2"], "not both"),
        (["--steps", "0"], "training.steps: must be > 0"),
    ],
)
def test_bad_input_is_one_line_error(isolated_state: Path, tiny_model_dir: Path, args: list[str], expected: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--model", str(tiny_model_dir), "--no-anchor", "--quiet"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert err.startswith("prov: error: ") and expected in err and err.count("\n") == 1


def test_config_file_errors_name_the_field(isolated_state: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[lora]\nrnak = 3\n")
    assert main(["train", str(config)]) == 2
    assert "lora.rnak: unknown field" in capsys.readouterr().err


def test_pickle_only_model_is_refused(isolated_state: Path, tiny_model_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    assert main(["train", "--model", str(model), "--no-anchor", "--quiet"]) == 2
    assert "safetensors only" in capsys.readouterr().err
