"""The README walk-through on real local infrastructure, as separate processes, the way a user runs it:
`prov chain up` (anvil) → `prov chain deploy` → a Kubo-RPC node (the js-ipfs test daemon) → `prov init-model` →
`prov train config.toml` (anchoring to anvil, storing in IPFS) → `prov chain down` → later, in a new process,
`prov verify` (anvil restarted from its saved state) — verified, with bitwise replay; a tampered copy fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the walk-through trains: install the train extra (scripts/setup does)")

pytestmark = [pytest.mark.chain, pytest.mark.ipfs, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def prov(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PROV_HOME=str(project / ".prov"), PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "provenance", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"prov {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def test_readme_walkthrough(tmp_path: Path, ipfs_daemon, anvil_node) -> None:
    del anvil_node  # only ensures anvil is installed (it skips, saying so, when it is not)
    project = tmp_path / "project"
    project.mkdir()
    store = f"kubo:{ipfs_daemon.api}"
    try:
        url = prov(project, "chain", "up", "--port", "0").stdout.strip().splitlines()[-1]
        assert url.startswith("http://127.0.0.1:")
        prov(project, "chain", "deploy")
        prov(project, "init-model", "--tiny", "model")
        (project / "config.toml").write_text(
            '[model]\npath = "model"\n[training]\nsteps = 6\ncheckpoint_every = 3\nthreads = 1\n'
            f'[anchor]\nstore = "{store}"\n')
        prov(project, "train", "config.toml", "--out", "run", "--quiet")
        status = prov(project, "anchor", "status", "run", "--json")
        # registration, checkpoints 0, 1, 2 and the finalisation (with the merged model's digest)
        assert json.loads(status.stdout)["status"] == "anchored 5/5"
        prov(project, "chain", "down")

        # Later, an auditor in a fresh process: anvil comes back from its saved state.
        adapter = project / "run" / "checkpoints" / "000002" / "adapter_model.safetensors"
        data = json.loads((project / "run" / "local.json").read_text())["data"]  # the demo dataset prov ships
        done = prov(project, "verify", str(adapter), "--store", store, "--base-model", "model", "--data", data,
                    "--secrets", "run/secrets.json", "--replay", "all", "--json", "--report", "report.html",
                    check=False)
        assert "restarted the project's anvil" in done.stderr
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["verdict"] == "verified", report["checks"]
        assert report["store"]["backend"].startswith("kubo")
        assert (project / "report.html").read_text().count("VERIFIED") >= 1

        tampered = project / "tampered.safetensors"
        blob = bytearray(adapter.read_bytes())
        blob[-1] ^= 0x40
        tampered.write_bytes(bytes(blob))
        bad = prov(project, "verify", str(tampered), "--store", store, check=False)
        assert bad.returncode == 1 and "FAILED" in bad.stdout
    finally:
        prov(project, "chain", "down", check=False)
