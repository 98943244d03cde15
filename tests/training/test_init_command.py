"""CLI conventions users know: `prov init` writes a commented config template that loads as the defaults, the main
commands' --help shows examples, and click's shell completion works for `prov`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.cli import main
from training.config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def test_prov_init_writes_a_commented_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    text = (tmp_path / "config.toml").read_text()
    assert text.count("#") > 20 and "[schedule]" in text and "min_lr_ratio" in text
    assert load_config(tmp_path / "config.toml") == TrainConfig()
    assert "prov train config.toml" in capsys.readouterr().out
    assert main(["init"]) == 2 and "--force" in capsys.readouterr().err  # never overwrites silently
    assert main(["init", "other.toml", "--force"]) == 0 and (tmp_path / "other.toml").read_text() == text


@pytest.mark.parametrize("command", ["verify", "train", "bundle", "init"])
def test_main_commands_show_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and f"prov {command}" in out


def test_shell_completion_script(tmp_path: Path) -> None:
    env = {**os.environ, "_PROV_COMPLETE": "bash_source", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", "import sys; from provenance.cli import main; sys.exit(main())"],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "_PROV_COMPLETE=bash_complete" in done.stdout, done.stderr


def test_third_party_warnings_become_one_line_notes(capsys: pytest.CaptureFixture[str]) -> None:
    import warnings

    from training.commands import _warnings_as_notes

    with _warnings_as_notes():
        for _ in range(3):
            warnings.warn("Secure RNG is off.\n  Consider installing torchcsprng.", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "(UserWarning): Secure RNG is off. Consider" in err
