"""Recompute ε from a run's recorded DP parameters and compare it with the ε committed on chain.

Tolerance: the committed value is micro-ε rounded up, and accountant numerics (PRV's discretisation) can differ
slightly between opacus versions, so the two agree when |committed − recomputed| ≤ 1e-6 + 1e-3·recomputed
(EPSILON_RTOL). A committed ε *below* the recomputed one by more than that is the dangerous case (a run claiming
more privacy than it had) and fails with its own message. Needs opacus (the `train` extra); without it the check
is skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Any

from provenance._verify.checks import CheckFailed
from provenance.errors import FormatError

EPSILON_RTOL = 1e-3
EPSILON_ATOL = 1e-6


@dataclass(frozen=True)
class PrivacyResult:
    private: bool
    recomputed: float | None
    committed: float | None
    summary: str


def _history(state: dict[str, Any]) -> tuple[str, list[tuple[float, float, int]]]:
    accountant = state.get("accountant")
    if not isinstance(accountant, dict) or not isinstance(accountant.get("history"), list):
        raise FormatError("checkpoint state.json: accountant history missing")
    history = []
    for item in accountant["history"]:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], int)):
            raise FormatError("checkpoint state.json: malformed accountant history entry")
        history.append((float(item[0]), float(item[1]), int(item[2])))
    return str(accountant.get("name", "prv")), history


def recompute_epsilon(name: str, history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import create_accountant

    accountant = create_accountant(name)
    accountant.history = list(history)
    return 0.0 if not history else float(accountant.get_epsilon(delta=delta))


def opacus_available() -> bool:
    return importlib.util.find_spec("opacus") is not None


def check_privacy(*, manifest: dict[str, Any], state: dict[str, Any], committed: float) -> PrivacyResult:
    """Raise CheckFailed unless the committed ε equals the recomputed one and respects the declared budget."""
    dp = manifest["training"].get("dp", {})
    mode = dp.get("mode")
    if mode == "non-private":
        if not math.isinf(committed):
            raise CheckFailed("the run manifest says non-private but a finite ε was committed",
                              expected="no ε (non-private)", found=committed)
        return PrivacyResult(False, None, None, "trained without differential privacy (recorded as such)")
    if mode != "dp":
        raise FormatError(f"run manifest: unknown dp.mode {mode!r}")
    if math.isinf(committed):
        raise CheckFailed("the run manifest says DP but no ε was committed", expected="a finite ε", found="none")
    name, history = _history(state)
    steps = sum(n for _, _, n in history)
    if steps != int(state["log_size"]):
        raise CheckFailed("the accountant history does not cover every logged step",
                          expected=state["log_size"], found=steps)
    sigma, q = float(dp["noise_multiplier"]), float(dp["sample_rate"])
    for s, r, _ in history:
        if not (math.isclose(s, sigma, rel_tol=1e-12) and math.isclose(r, q, rel_tol=1e-12)):
            raise CheckFailed("the accountant history uses other DP parameters than the run manifest",
                              expected=f"σ={sigma}, q={q}", found=f"σ={s}, q={r}")
    if str(dp.get("accountant", name)) != name:
        raise CheckFailed("the accountant differs from the run manifest", expected=dp.get("accountant"), found=name)
    delta = float(dp["delta"])
    recomputed = recompute_epsilon(name, history, delta)
    tolerance = EPSILON_ATOL + EPSILON_RTOL * recomputed
    if committed < recomputed - tolerance:
        raise CheckFailed("the committed ε is lower than the ε these parameters actually spend",
                          expected=f"ε ≥ {recomputed:.6f}", found=f"ε = {committed:.6f}")
    if committed > recomputed + tolerance:
        raise CheckFailed("the committed ε does not match the recomputed one",
                          expected=f"ε = {recomputed:.6f}", found=f"ε = {committed:.6f}")
    budget = dp.get("epsilon_budget")
    summary = f"ε = {recomputed:.4g} at δ = {delta:.3g} ({name}, {steps} steps) matches the commitment"
    if budget is not None:
        if recomputed > float(budget) + tolerance:
            raise CheckFailed("ε exceeds the run's declared privacy budget", expected=f"ε ≤ {budget}",
                              found=f"ε = {recomputed:.6f}")
        summary += f", within budget {budget}"
    return PrivacyResult(True, recomputed, committed, summary)
