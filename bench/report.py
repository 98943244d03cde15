"""Collect every benchmark module's rows and write BENCHMARKS.md (see bench/run)."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import show

MODULES = ["bench.bench_foundation", "bench.bench_cid", "bench.bench_gas", "bench.bench_train",
           "bench.bench_steps", "bench.bench_verify", "bench.bench_attest", "bench.bench_stock"]
OUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


KEPT_FROM = "\n## "  # sections after the bench/run table (the small model's, measured on its own) are kept


def _kept_sections() -> str:
    """The hand-run sections of the current BENCHMARKS.md (from its first `## ` heading on), kept on rewrite."""
    if not OUT.is_file():
        return ""
    text = OUT.read_text(encoding="utf-8")
    at = text.find(KEPT_FROM)
    return text[at + 1 :] if at >= 0 else ""


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    sections: list[tuple[str, list[dict[str, Any]], float]] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        started = time.monotonic()
        print(f"== {name}", flush=True)
        rows = module.run(quick=quick)
        show(rows)
        sections.append((name, rows, time.monotonic() - started))
    lines = [
        "# Benchmarks",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `bench/run{' --quick' if quick else ''}` on "
        f"{_machine()}.",
        "Each figure is measured side by side with its baseline in the same run (these machines are noisy); the",
        "ratio is value / baseline. Regenerate with `bench/run`.",
        "",
        "| benchmark | value | baseline | ratio | target |",
        "|---|---|---|---|---|",
    ]
    for _, rows, _ in sections:
        for r in rows:
            lines.append(f"| {r['name']} {r.get('note', '')} | {r['value']:.4g} {r['unit']} | "
                         f"{r['baseline']:.4g} {r['unit']} | {r['ratio']:.3f} | {r.get('target') or 'report'} |")
    lines += ["", "Time per module: " + ", ".join(f"{n.split('.')[-1]} {t:.0f} s" for n, _, t in sections), ""]
    kept = _kept_sections()
    OUT.write_text("\n".join(lines) + (f"\n{kept}" if kept else ""))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
