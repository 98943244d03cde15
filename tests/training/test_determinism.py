"""Determinism profiles: what each sets, that `prov train` applies the portable one before torch is imported (in
a fresh process), and the environment a replay or resume is started with."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from provenance.errors import UsageError
from training.determinism import environment_for, profile_environment


def test_profiles() -> None:
    assert profile_environment("portable", machine="x86_64") == {
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert profile_environment("portable", machine="aarch64") == {}  # torch's default there is portable already
    assert profile_environment("native", machine="x86_64") == {}
    assert profile_environment("native", device="cuda")["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with pytest.raises(UsageError, match="portable or native"):
        profile_environment("fast")


def test_environment_for_a_recorded_run() -> None:
    manifest = {"determinism": {"cpu_capability": "AVX2", "device": "cpu",
                                "env": {"MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "1", "LD_PRELOAD": "/evil.so",
                                        "ATEN_CPU_CAPABILITY": None}}}
    assert environment_for(manifest) == {"MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2"}
    bogus = {"determinism": {"cpu_capability": "AVX9000; rm -rf /", "env": {"ATEN_CPU_CAPABILITY": "avx512"}}}
    assert environment_for(bogus) == {}  # only known capabilities and known variables are passed on


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != "x86_64", reason="the portable profile sets variables on x86-64 only")
def test_prov_train_applies_the_portable_profile_before_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")}
    env["PROV_HOME"] = str(tmp_path / "home")
    out = subprocess.run([sys.executable, "-m", "provenance", "train", "--model", str(tiny_model_dir), "--steps", "1",
                          "--checkpoint-every", "1", "--threads", "1", "--no-anchor", "--quiet", "--json", "--out",
                          str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    assert "warning" not in out.stderr
    det = json.loads((tmp_path / "run" / "run.json").read_text())["determinism"]
    assert det["profile"] == "portable" and det["cpu_capability"] == "AVX2"
    assert det["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and det["env"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"
