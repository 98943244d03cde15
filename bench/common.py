"""Shared helpers for benchmarks: interleaved timing (these machines are noisy) and result rows.

Every benchmark module exposes `run(quick: bool = False) -> list[dict]`, each row
`{"name", "value", "baseline", "ratio", "unit", "target", "note"}` measured side by side in one run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved(a: Callable[[], Any], b: Callable[[], Any], *, rounds: int = 5) -> tuple[float, float]:
    """Median wall times of `a` and `b`, run alternately (ABAB...) so drift hits both alike."""
    ta: list[float] = []
    tb: list[float] = []
    for _ in range(rounds):
        for fn, out in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def row(name: str, value: float, baseline: float, *, unit: str, target: str = "", note: str = "") -> dict[str, Any]:
    return {"name": name, "value": value, "baseline": baseline, "ratio": value / baseline if baseline else 0.0,
            "unit": unit, "target": target, "note": note}


def show(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(f"{r['name']}: {r['value']:.4g} {r['unit']} vs baseline {r['baseline']:.4g} {r['unit']}"
              f" -> ratio {r['ratio']:.3f} (target {r.get('target') or 'report'}) {r.get('note', '')}")
