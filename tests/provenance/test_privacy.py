"""The DP claim checked without torch (issue #23): a verifier-only install (no torch, transformers, peft or opacus
importable) bounds ε with dp-accounting and reaches VERIFIED (commitments) for a DP run anchored on a real anvil."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the DP run is trained by the project's trainer (the train extra)")

from tests.fixtures.adversary import Lab, check_of, last_adapter
from tests.test_layering import BLOCK_HEAVY, HEAVY

pytestmark = [pytest.mark.chain, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_a_dp_run_verifies_without_torch(lab: Lab) -> None:
    run = lab.train("dp")
    lab.finalize(run)
    code = textwrap.dedent(f"""
        from provenance.cli import main
        status = main(sys.argv[1:])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"heavy": heavy}}), file=sys.stderr)
        sys.exit(status)
    """)
    done = subprocess.run(
        [sys.executable, "-c", BLOCK_HEAVY + "import json\n" + code, "verify", str(last_adapter(run)), "--rpc",
         lab.rpc_url, "--registry", str(lab.registry.address), "--store", lab.store_spec, "--json"],
        capture_output=True, text=True, cwd=lab.home, timeout=600,
        env={**os.environ, "PROV_HOME": str(lab.home / ".prov"), "PROV_CACHE": str(lab.home / "cache")})
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["verdict"] == "verified", report["checks"]
    assert report["level"]["name"] == "commitments"
    assert json.loads(done.stderr.strip().splitlines()[-1]) == {"heavy": []}  # nothing heavy was imported
    privacy = check_of(report, "privacy")
    assert privacy["status"] == "passed" and "dp-accounting" in privacy["summary"], privacy
    # The committed ε is opacus' PRV value (the trainer's); dp-accounting's PLD bound is below it.
    assert "PLD" in privacy["summary"] and "at least the bound at all" in privacy["summary"]
    # The report states the guarantee, not a bare ε: unit, sampler, accountants, what is not covered.
    statement = " ".join(report["dp"]["statement"])
    assert "one record of the committed dataset" in statement and "Poisson" in statement
    assert "Not covered: a person with several records" in statement
    assert report["dp"]["epsilon_committed"] >= report["dp"]["epsilon_recomputed"]


def test_a_verifier_only_install_verifies_a_dp_run(lab: Lab, tmp_path: Path) -> None:
    """The compliance officer's install, for real: a new venv with `pip install .` and no extra (no torch, no
    opacus: they are not even installable from it) verifies a DP run at the commitments level, ε bounded by
    dp-accounting, which the core install declares."""
    run = lab.train("dp-venv")
    lab.finalize(run)
    source = tmp_path / "src"  # a copy, so pip's in-tree build leaves the checkout alone
    source.mkdir()
    for name in ("provenance", "training"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(source)], capture_output=True, text=True, timeout=1200)
    assert pip.returncode == 0, pip.stderr[-2000:]
    for heavy in ("torch", "opacus", "transformers", "peft"):
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", f"import {heavy}"], capture_output=True)
        assert probe.returncode != 0, f"{heavy} is importable in the verifier-only venv"
    done = subprocess.run(
        [str(venv / "bin" / "prov"), "verify", str(last_adapter(run)), "--rpc", lab.rpc_url, "--registry",
         str(lab.registry.address), "--store", lab.store_spec, "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={**os.environ, "PROV_HOME": str(lab.home / ".prov"), "PROV_CACHE": str(tmp_path / "cache")})
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["verdict"] == "verified", (done.stderr[-2000:], report["checks"])
    assert report["level"]["name"] == "commitments"
    privacy = check_of(report, "privacy")
    assert privacy["status"] == "passed" and "dp-accounting" in privacy["summary"], privacy
