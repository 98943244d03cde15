"""The main job (`scripts/demo` runs `prov demo` after set-up) end to end on the embedded defaults: train on a local
anvil, anchor, verify the shipped adapter with replay, fail a tampered copy, verify the merged model; then, in a new
process from the demo's directory, the printed "verify again later" command restarts anvil from its saved state and
verifies again; that anvil stays up for later commands (as after `prov chain up`) until `prov chain down`. Nothing
is left running."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.chain]


def _ours_running(out: Path) -> list[str]:
    """Command lines of the live processes that name the demo's directory (its anvil holds its state file there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if str(out) in cmdline:
            found.append(cmdline)
    return found


def _chain_down(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "provenance", "chain", "down"], cwd=out, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_main_job_runs_end_to_end_and_verifies_again_later(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    try:
        _main_job_and_later(out)
    finally:
        if (out / ".prov").is_dir():
            _chain_down(out)  # stops the project's anvil by its recorded PID, whatever failed above
    assert _ours_running(out) == []


def _main_job_and_later(out: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "provenance", "demo", "--out", str(out)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "honest adapter verified, tampered copy failed, merged model verified" in done.stdout, done.stdout[-2000:]
    assert json.loads((out / "report.json").read_text())["verdict"] == "verified"
    assert _ours_running(out) == []

    again = [line.strip() for line in done.stdout.splitlines() if line.strip().startswith(f"cd {out} && prov verify")]
    assert len(again) == 2, done.stdout[-2000:]
    args = shlex.split(again[0].split("&&", 1)[1])[1:]  # prov verify adapter --base-model model --data ... --report
    later = subprocess.run([sys.executable, "-m", "provenance", *args, "--json"], cwd=out, capture_output=True,
                           text=True, timeout=600, check=False)
    assert later.returncode == 0, later.stderr[-3000:]
    assert json.loads(later.stdout)["verdict"] == "verified"
    assert "restarted the project's anvil from its saved state" in later.stderr, later.stderr[-2000:]
    assert len(_ours_running(out)) == 1  # the project's chain, up for the next command
    down = _chain_down(out)
    assert down.returncode == 0, down.stderr
    assert _ours_running(out) == []

    # the README's next steps for the trainer, in a new shell: each restarts the run's anvil when it is down
    run, car = next((out / ".prov" / "runs").iterdir()), out / "run.car"
    for command in (["anchor", "status", str(run)], ["bundle", str(run), "--out", str(car)]):
        step = subprocess.run([sys.executable, "-m", "provenance", *command], cwd=out, capture_output=True, text=True,
                              timeout=300, check=False)
        assert step.returncode == 0, (command, step.stderr[-2000:])
        restarted = "restarted the project's anvil from its saved state" in step.stderr
        assert restarted == (command[0] == "anchor"), (command, step.stderr)  # bundle finds it still up
    assert "anchored 6/6" in subprocess.run([sys.executable, "-m", "provenance", "anchor", "status", str(run)],
                                            cwd=out, capture_output=True, text=True, timeout=300).stdout
    assert car.stat().st_size > 0
    assert _chain_down(out).returncode == 0 and _ours_running(out) == []
