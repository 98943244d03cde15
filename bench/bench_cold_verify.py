"""Issue #23's second target: a cold `prov verify FILE` of `prov demo` (≤ 2 s), side by side with the code before.

The demo is trained once with this tree (`prov demo --replay 0`), its anvil left running for the rounds and stopped
after. Each round runs `python -m provenance verify adapter_model.safetensors --replay 0` in a fresh process with an
empty ε cache (PROV_CACHE), once with this tree and once with a copy of it in which the files #23's start-up work
changed (BEFORE_FILES) are taken as they were at `--against REV` (`git show`): the same code otherwise, so the same
run formats, and the difference is that work alone. Interleaved, medians, each must print VERIFIED. Peak RSS per
process from wait4. The load average is reported: on a shared machine it moves wall times more than anything else.

    python bench/bench_cold_verify.py [--rounds 5] [--against REV]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import row, show

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = "f2b4215"  # before the one-pass PLD, lazy dp-accounting imports and the cached eth_chainId
BEFORE_FILES = ("provenance/_verify/accounting.py", "provenance/_chain/transport.py")


def _before(rev: str, into: Path) -> Path:
    """This tree's packages, with BEFORE_FILES as they were at `rev`."""
    for package in ("provenance", "training"):
        shutil.copytree(ROOT / package, into / package, ignore=shutil.ignore_patterns("__pycache__"))
    for path in BEFORE_FILES:
        (into / path).write_bytes(subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                                                 capture_output=True).stdout)
    return into


def _verify(tree: Path, demo: Path) -> tuple[float, int]:
    """Seconds and peak RSS (KiB) of one cold verification with the code in `tree`."""
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryFile() as out:
        env = {**os.environ, "PROV_CACHE": cache, "PYTHONPATH": str(tree)}
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "provenance", "verify", "adapter_model.safetensors",
                                 "--replay", "0"], cwd=demo, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    assert proc.returncode == 0 and "VERIFIED" in text, (tree, proc.returncode, text[-2000:])
    return seconds, int(usage.ru_maxrss)


def bench_cold_verify(*, rounds: int = 5, against: str = PREVIOUS) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        old = _before(against, root / "before")
        demo = root / "demo"
        try:
            subprocess.run([sys.executable, "-m", "provenance", "demo", "--out", str(demo), "--replay", "0"],
                           cwd=root, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            new_runs: list[tuple[float, int]] = []
            old_runs: list[tuple[float, int]] = []
            load = os.getloadavg()[0]
            for _ in range(rounds):  # alternating, so drift on a shared machine hits both alike
                new_runs.append(_verify(ROOT, demo))
                old_runs.append(_verify(old, demo))
            load = (load + os.getloadavg()[0]) / 2
        finally:
            if demo.exists():
                subprocess.run([sys.executable, "-m", "provenance", "chain", "down"], cwd=demo, capture_output=True)
    t_new, t_old = (statistics.median(t for t, _ in runs) for runs in (new_runs, old_runs))
    rss_new, rss_old = (max(r for _, r in runs) // 1024 for runs in (new_runs, old_runs))
    before = ", ".join(Path(p).name for p in BEFORE_FILES)
    return [row(f"cold `prov verify adapter_model.safetensors --replay 0` of `prov demo` (fresh process, empty ε "
                f"cache): this tree vs the same with {before} as at {against}", t_new, t_old, unit="s",
                target="<= 2 s",
                note=f"(median of {rounds}, interleaved; peak RSS {rss_new} MB vs {rss_old} MB; all VERIFIED; "
                     f"{os.cpu_count()} cores, load average {load:.1f}; new {sorted(round(t, 2) for t, _ in new_runs)}"
                     f", before {sorted(round(t, 2) for t, _ in old_runs)})")]


if __name__ == "__main__":
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 5
    against = sys.argv[sys.argv.index("--against") + 1] if "--against" in sys.argv else PREVIOUS
    show(bench_cold_verify(rounds=rounds, against=against))
