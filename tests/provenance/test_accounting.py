"""The verifier's fast ε paths (provenance/_verify/accounting.py) give the results of the straightforward ones.

- `pld_bounds` (all checkpoints of a run composed incrementally, one spectrum) against `pld_bound` per checkpoint
  (dp-accounting's self-composition at each checkpoint's own FFT length, pinned bit for bit to the library in
  test_verify_units.py): equal up to rounding, so every accept/fail decision is the same.
- `_dense_epsilon` (the walk over the losses in chunks, stopping early) against a whole-array reference: bit for bit.
- `_lazy_imports`: dp-accounting's package `__init__`s and scipy.signal are not run for a verification, and still
  work when someone asks for them.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from provenance._verify import accounting

CASES = [(1 / 32, 1.0), (0.01, 0.8), (0.001, 0.6), (0.3, 3.0), (1.0, 5.0), (1.0, 0.7)]


def _whole_array_epsilon(pmf: Any, delta: float) -> float:
    """The reference: dp-accounting 0.6.0's `_get_epsilon_for_delta` vectorised over the whole array at once (the
    verifier's implementation before the walk was chunked; itself compared with the library in test_verify_units)."""
    infinity = float(pmf._infinity_mass)
    if infinity > delta:
        return math.inf
    probs = np.flip(np.asarray(pmf._probs, dtype=np.float64))
    losses = (pmf._lower_loss + len(probs) - 1) * pmf._discretization - np.arange(len(probs)) * pmf._discretization
    upper = infinity + np.cumsum(probs)
    lower = np.cumsum(np.exp(-losses) * probs)
    before_upper = np.concatenate(([infinity], upper[:-1]))
    before_lower = np.concatenate(([0.0], lower[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        stop = (before_upper > delta) & (before_lower > 0) & (
            np.log((before_upper - delta) / np.where(before_lower > 0, before_lower, 1.0)) >= losses)
    k = int(np.argmax(stop)) if stop.any() else len(probs)
    underflow = (upper >= delta) & (lower == 0)
    if underflow[:k].any():
        return max(0.0, float(losses[int(np.argmax(underflow[:k]))]))
    mass_upper = before_upper[k] if k < len(probs) else float(upper[-1]) if len(probs) else infinity
    mass_lower = before_lower[k] if k < len(probs) else float(lower[-1]) if len(probs) else 0.0
    if mass_upper <= mass_lower + delta:
        return 0.0
    return float(math.log((mass_upper - delta) / mass_lower))


@pytest.mark.parametrize("q, sigma", CASES)
def test_the_chunked_walk_reads_the_same_epsilon_bit_for_bit(q: float, sigma: float) -> None:
    checked = 0
    for steps in (1, 7, 100, 2500):  # 2,500 steps: tens of thousands of points, several chunks
        pld = accounting._self_compose(q, sigma, 1e-3, steps)
        for pmf in [pld._pmf_remove] if pld._symmetric else [pld._pmf_remove, pld._pmf_add]:
            for delta in (0.5, 1e-1, 1e-3, 1e-5, 1e-9, 1e-14):
                ours, reference = accounting._dense_epsilon(pmf, delta), _whole_array_epsilon(pmf, delta)
                assert ours == reference, (steps, delta, ours, reference)
                checked += 1
    assert checked >= 24


@pytest.mark.parametrize("q, sigma", CASES)
def test_incremental_composition_gives_each_checkpoints_own_bound(q: float, sigma: float) -> None:
    """Unsorted step counts, repeats and 0 included; several δ; both intervals the verifier uses."""
    steps = [300, 0, 1, 37, 37, 1200, 600, 2]
    # The two differ only by the FFTs' rounding (~1e-16 a point), which matters relative to the mass ε rests on:
    # δ. Measured worst: 3.9e-11 relative at δ = 1e-3, 2.6e-9 at 1e-5, 8.2e-6 at 1e-9; the slack is 1e-4.
    for delta, rel in ((1e-3, 1e-9), (1e-5, 1e-8), (1e-9, 2e-5)):
        interval = accounting.PLD_INTERVALS[0]
        together = accounting.pld_bounds(q=q, sigma=sigma, delta=delta, interval=interval, steps=steps)
        alone = [accounting.pld_bound((q, sigma, n, delta, interval)) for n in steps]
        assert together == pytest.approx(alone, rel=rel, abs=1e-12), (delta, together, alone)
        assert together[1] == 0.0 and together[3] == together[4]
    fine = accounting.PLD_INTERVALS[1]
    assert accounting.pld_bounds(q=q, sigma=sigma, delta=1e-5, interval=fine, steps=[10, 50]) == pytest.approx(
        [accounting.pld_bound((q, sigma, n, 1e-5, fine)) for n in (10, 50)], rel=1e-9, abs=1e-12)


def test_a_long_run_is_judged_as_before(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """upper_bounds with the incremental composition vs with one dp-accounting composition per checkpoint (the path
    before): the same accountant, interval and bound for each of 40 checkpoints of a 4,000-step run, and the same
    verdict for claims just above and just below each bound's slack, so no decision moves."""
    monkeypatch.setenv("PROV_CACHE", str(tmp_path / "fast"))
    q, sigma, delta = 1 / 32, 1.0, 256 ** -1.1
    steps = [4000 * i // 39 for i in range(40)]
    exact = accounting.pld_bounds(q=q, sigma=sigma, delta=delta, interval=accounting.PLD_INTERVALS[0], steps=steps)
    claims = [e + 0.01 * (i % 2) - 0.5 * accounting.slack(e) * (i % 3 == 0) for i, e in enumerate(exact)]
    claims[5] = exact[5] - 0.05  # understated: refined at the finer interval, still below: fails
    fast = accounting.upper_bounds(q=q, sigma=sigma, delta=delta, steps=steps, committed=claims)

    def one_at_a_time(*, q: float, sigma: float, delta: float, interval: float, steps: list[int]) -> list[float]:
        return [accounting.pld_bound((q, sigma, n, delta, interval)) for n in steps]

    monkeypatch.setattr(accounting, "pld_bounds", one_at_a_time)
    monkeypatch.setenv("PROV_CACHE", str(tmp_path / "slow"))
    slow = accounting.upper_bounds(q=q, sigma=sigma, delta=delta, steps=steps, committed=claims)
    assert [(b.accountant, b.interval, b.pld is None) for b in fast] == [
        (b.accountant, b.interval, b.pld is None) for b in slow]
    assert [b.epsilon for b in fast] == pytest.approx([b.epsilon for b in slow], rel=1e-9, abs=1e-12)
    verdicts = [[c >= b.epsilon - accounting.slack(b.epsilon) for c, b in zip(claims, bounds, strict=True)]
                for bounds in (fast, slow)]
    assert verdicts[0] == verdicts[1]
    assert not verdicts[0][5] and fast[5].interval == accounting.PLD_INTERVALS[1]
    assert sum(verdicts[0]) == 39


def test_a_verification_runs_only_the_parts_of_dp_accounting_it_needs() -> None:
    code = """
import sys
from provenance._verify import accounting
bounds = accounting.upper_bounds(q=1 / 32, sigma=1.0, delta=1e-5, steps=[0, 10, 30], committed=[0.0, 0.1, 0.1])
assert bounds[-1].pld is not None
loaded = set(sys.modules)
assert "dp_accounting.mechanism_calibration" not in loaded, "dp_accounting/__init__ ran"
assert "scipy.signal._signaltools" not in loaded, "scipy.signal was loaded"
import dp_accounting
from dp_accounting import pld
from scipy import signal
assert dp_accounting.DpEvent is not None and pld.PLDAccountant is not None  # the package __init__s, on demand
assert list(signal.fftconvolve([1.0, 1.0], [1.0, 1.0]).round(6)) == [1.0, 2.0, 1.0]  # scipy.signal, on demand
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
