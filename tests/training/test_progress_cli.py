"""Long commands show progress only where a person watches: `prov train` and `prov init-model` draw a bar when
bars are on (PROV_PROGRESS=1 stands in for a terminal), and nothing under --json or when stderr is not a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provenance.cli import main
from provenance.progress import ENV


def _train(out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(out.parent / "model"), "--steps", "2", "--checkpoint-every", "2", "--threads",
            "1", "--profile", "native", "--no-anchor", "--out", str(out), *extra]


def test_train_and_init_model_bars_and_when_they_stay_quiet(isolated_state: Path, tiny_model_dir: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    monkeypatch.delenv(ENV, raising=False)
    assert main(_train(tmp_path / "piped")) == 0  # stderr is not a terminal: log lines, no bar
    err = capsys.readouterr().err
    assert "step 2/2" in err and "\r" not in err and "it/s" not in err
    monkeypatch.setenv(ENV, "1")
    assert main(_train(tmp_path / "json", "--json")) == 0  # --json: nothing on stderr but errors
    captured = capsys.readouterr()
    assert json.loads(captured.out)["steps"] == 2 and "train:" not in captured.err and "step/s" not in captured.err
    assert main(_train(tmp_path / "bar")) == 0
    err = capsys.readouterr().err
    assert "train:" in err and "/2 [" in err and "step/s" in err  # the tqdm bar: count, elapsed<ETA, rate
    assert main(["init-model", "--tiny", str(tmp_path / "m")]) == 0
    assert "init-model tiny" in capsys.readouterr().err
