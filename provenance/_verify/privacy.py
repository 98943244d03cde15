"""Recompute ε for every checkpoint of a lineage from its recorded DP parameters, and compare each with the ε
committed on chain (a trainer cannot commit a tiny ε for earlier checkpoints: each is checked).

Tolerance: the committed value is micro-ε rounded up, and accountant numerics (PRV's discretisation) can differ
slightly between opacus versions, so the two agree when |committed − recomputed| ≤ 1e-6 + 1e-3·recomputed
(EPSILON_RTOL). A committed ε *below* the recomputed one by more than that is the dangerous case (a run claiming
more privacy than it had) and fails with its own message.

Cost: the RDP accountant's per-order values are computed once per (σ, q) and scaled by the step count — exactly what
opacus computes, so the numbers are identical; PRV evaluations (≈0.1–2 s each, growing with the step count) run in
parallel processes. Needs opacus (the `train` extra); without it the check is inconclusive, saying what to install.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.errors import FormatError

EPSILON_RTOL = 1e-3
EPSILON_ATOL = 1e-6
History = tuple[tuple[float, float, int], ...]


@dataclass(frozen=True)
class PrivacyResult:
    private: bool
    recomputed: list[float | None]  # per checkpoint of the lineage
    summary: str

    @property
    def last(self) -> float | None:
        return self.recomputed[-1] if self.recomputed else None


def history_of(state: dict[str, Any], where: str) -> tuple[str, History]:
    accountant = state.get("accountant")
    if accountant is None:
        return "none", ()
    if not isinstance(accountant, dict) or not isinstance(accountant.get("history"), list):
        raise FormatError(f"{where} state.json: accountant history missing")
    history = []
    for item in accountant["history"]:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], int) and item[2] >= 0):
            raise FormatError(f"{where} state.json: malformed accountant history entry")
        try:
            history.append((float(item[0]), float(item[1]), int(item[2])))
        except (TypeError, ValueError):
            raise FormatError(f"{where} state.json: accountant history entry is not numbers") from None
    return str(accountant.get("name", "prv")), tuple(history)


def opacus_available() -> bool:
    return importlib.util.find_spec("opacus") is not None


@functools.lru_cache(maxsize=64)
def _rdp_per_step(q: float, sigma: float) -> Any:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import compute_rdp

    return compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)


def recompute_epsilon(name: str, history: History, delta: float) -> float:
    """ε of an accountant history at δ, as opacus computes it (0.0 for no steps)."""
    if not history or all(n == 0 for _, _, n in history):
        return 0.0
    if name == "rdp" and len(history) == 1:
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import get_privacy_spent

        sigma, q, steps = history[0]
        rdp = sum([_rdp_per_step(q, sigma) * steps])
        eps, _ = get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
        return float(eps)
    from opacus.accountants import create_accountant

    accountant = create_accountant(name)
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


def _recompute_all(jobs: Sequence[tuple[str, History, float]]) -> list[float]:
    unique = sorted(set(jobs), key=lambda j: sum(n for _, _, n in j[1]), reverse=True)
    slow = [j for j in unique if j[0] != "rdp" and j[1]]
    results: dict[tuple[str, History, float], float] = {}
    workers = min(len(slow), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, value in zip(slow, pool.map(_recompute_job, slow), strict=True):
                results[job] = value
    for job in unique:
        if job not in results:
            results[job] = recompute_epsilon(*job)
    return [results[j] for j in jobs]


def _recompute_job(job: tuple[str, History, float]) -> float:
    return recompute_epsilon(*job)


def _check_one(*, index: int, name: str, history: History, state: dict[str, Any], dp: dict[str, Any]) -> None:
    steps = sum(n for _, _, n in history)
    if steps != int(state.get("log_size", -1)):
        raise CheckFailed(f"checkpoint {index}: the accountant history does not cover every logged step",
                          expected=state.get("log_size"), found=steps)
    sigma, q = float(dp["noise_multiplier"]), float(dp["sample_rate"])
    for s, r, _ in history:
        if not (math.isclose(s, sigma, rel_tol=1e-12) and math.isclose(r, q, rel_tol=1e-12)):
            raise CheckFailed(f"checkpoint {index}: the accountant history uses other DP parameters than the run "
                              "manifest", expected=f"σ={sigma}, q={q}", found=f"σ={s}, q={r}")
    if history and str(dp.get("accountant", name)) != name:
        raise CheckFailed(f"checkpoint {index}: the accountant differs from the run manifest",
                          expected=dp.get("accountant"), found=name)


def check_privacy(*, manifest: dict[str, Any], states: Sequence[dict[str, Any]],
                  committed: Sequence[float]) -> PrivacyResult:
    """Raise CheckFailed unless every checkpoint's committed ε equals the one recomputed from its state and the
    last respects the declared budget. `states[i]` and `committed[i]` belong to checkpoint i of the lineage."""
    dp = manifest["training"].get("dp", {})
    mode = dp.get("mode")
    if mode == "non-private":
        for index, value in enumerate(committed):
            if not math.isinf(value):
                raise CheckFailed(f"the run manifest says non-private but checkpoint {index} committed a finite ε",
                                  expected="no ε (non-private)", found=value)
        return PrivacyResult(False, [None] * len(committed), "trained without differential privacy (recorded as "
                                                             "such)")
    if mode != "dp":
        raise FormatError(f"run manifest: unknown dp.mode {mode!r}")
    if not opacus_available():
        raise CheckInconclusive("ε cannot be recomputed here: opacus is not installed "
                                "(pip install torch==2.13.0 'prov[train]')")
    delta = float(dp["delta"])
    jobs = []
    for index, (state, value) in enumerate(zip(states, committed, strict=True)):
        if math.isinf(value):
            raise CheckFailed(f"the run manifest says DP but checkpoint {index} committed no ε",
                              expected="a finite ε", found="none")
        name, history = history_of(state, f"checkpoint {index}")
        _check_one(index=index, name=name, history=history, state=state, dp=dp)
        jobs.append((name if history else "rdp", history, delta))
    recomputed = _recompute_all(jobs)
    for index, (value, eps) in enumerate(zip(committed, recomputed, strict=True)):
        tolerance = EPSILON_ATOL + EPSILON_RTOL * eps
        if value < eps - tolerance:
            raise CheckFailed(f"checkpoint {index}: the committed ε is lower than the ε its parameters actually "
                              "spend", expected=f"ε ≥ {eps:.6f}", found=f"ε = {value:.6f}")
        if value > eps + tolerance:
            raise CheckFailed(f"checkpoint {index}: the committed ε does not match the recomputed one",
                              expected=f"ε = {eps:.6f}", found=f"ε = {value:.6f}")
    last = recomputed[-1]
    name = jobs[-1][0]
    summary = (f"ε = {last:.4g} at δ = {delta:.3g} ({name}, {int(states[-1].get('log_size', 0))} steps); all "
               f"{len(recomputed)} committed values recomputed and matching")
    budget = dp.get("epsilon_budget")
    if budget is not None:
        if last > float(budget) + EPSILON_ATOL + EPSILON_RTOL * last:
            raise CheckFailed("ε exceeds the run's declared privacy budget", expected=f"ε ≤ {budget}",
                              found=f"ε = {last:.6f}")
        summary += f", within budget {budget}"
    return PrivacyResult(True, list(recomputed), summary)
