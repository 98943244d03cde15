"""Recompute ε for every checkpoint of a lineage from its recorded DP parameters, and compare each with the ε
committed on chain (a trainer cannot commit a tiny ε for earlier checkpoints: each is checked).

Tolerance: the committed value is micro-ε rounded up. With the run's own opacus version that rounding is the only
difference allowed; with another version (PRV's discretisation can move between releases) the two must agree within
1e-6 + 1e-3·recomputed (EPSILON_RTOL), and the summary says so. A committed ε *below* the recomputed one is the
dangerous case (a run claiming more privacy than it had) and fails with its own message.

Cost: the RDP accountant's per-order values are computed once per (σ, q) and scaled by the step count — exactly what
opacus computes, so the numbers are identical; PRV evaluations (≈0.1–2 s each, growing with the step count) run in
parallel processes and are remembered in the auditor's cache (`$PROV_CACHE`, else `~/.cache/prov`, file
`epsilon-v1.json`, keyed by the accountant, its history, δ and the opacus version), so verifying a run again costs
nothing for ε. Needs opacus (the
`train` extra); without it the check is inconclusive, saying what to install.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.errors import FormatError

EPSILON_RTOL = 1e-3
ACCOUNTANTS = ("rdp", "prv")  # gdp is asymptotic: not a guarantee prov will vouch for
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


CACHE_FILE = "epsilon-v1.json"


def _cache_key(job: tuple[str, History, float]) -> str:
    name, history, delta = job
    return canonical.encode([name, [[repr(s), repr(q), n] for s, q, n in history], repr(delta),
                             _installed_opacus()]).decode()


def _load_cache() -> tuple[Path | None, dict[str, str]]:
    """The auditor's own cache of PRV results: the same (accountant, history, δ, opacus version) always gives the
    same ε, and a PRV evaluation costs up to seconds. Never shared, never taken from a run: it only holds what this
    machine computed."""
    try:
        root = Path(os.environ.get("PROV_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                    / "prov")
        root.mkdir(parents=True, exist_ok=True)
        path = root / CACHE_FILE
        data = canonical.load_json(path.read_bytes(), source=str(path)) if path.is_file() else {}
    except (OSError, FormatError):
        return None, {}
    return path, {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _recompute_all(jobs: Sequence[tuple[str, History, float]]) -> list[float]:
    unique = sorted(set(jobs), key=lambda j: sum(n for _, _, n in j[1]), reverse=True)
    path, cache = _load_cache()
    results: dict[tuple[str, History, float], float] = {}
    for job in unique:
        hit = cache.get(_cache_key(job)) if job[0] != "rdp" else None
        if hit is not None:
            results[job] = float(hit)
    slow = [j for j in unique if j[0] != "rdp" and j[1] and j not in results]
    workers = min(len(slow), os.cpu_count() or 1)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, value in zip(slow, pool.map(_recompute_job, slow), strict=True):
                results[job] = value
    for job in unique:
        if job not in results:
            results[job] = recompute_epsilon(*job)
    fresh = {_cache_key(j): repr(results[j]) for j in slow}
    if path is not None and fresh:
        from provenance.fsutil import atomic_write

        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write(path, canonical.encode({**cache, **fresh}))
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


def dp_parameters(dp: dict[str, Any]) -> tuple[float, float, float, str]:
    """(σ, q, δ, accountant) of a manifest's `dp` section, refusing values no honest DP-SGD run has: an ε computed
    from them would be meaningless (δ = 0 or NaN made every comparison vacuous)."""
    try:
        sigma, q, delta = float(dp["noise_multiplier"]), float(dp["sample_rate"]), float(dp["delta"])
    except (KeyError, TypeError, ValueError):
        raise CheckFailed("the run manifest's DP parameters are missing or not numbers",
                          expected="noise_multiplier, sample_rate, delta", found=dp) from None
    accountant = dp.get("accountant")
    problems = []
    if not (math.isfinite(sigma) and sigma > 0):
        problems.append(f"noise multiplier {sigma}")
    if not (math.isfinite(q) and 0 < q <= 1):
        problems.append(f"sample rate {q}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        problems.append(f"δ {delta}")
    if accountant not in ACCOUNTANTS:
        problems.append(f"accountant {accountant!r}")
    if problems:
        raise CheckFailed("the run manifest's DP parameters cannot describe a DP-SGD run", expected="σ > 0, "
                          f"0 < q ≤ 1, 0 < δ < 1, accountant in {ACCOUNTANTS}", found=", ".join(problems))
    return sigma, q, delta, str(accountant)


def _tolerance(eps: float, exact: bool) -> tuple[float, float]:
    """How far below and above the recomputed ε a committed one may be. The committed value is micro-ε rounded
    up; with the trainer's own opacus version the computation is the same, so only that rounding is allowed."""
    if exact:
        return 1e-9 * max(1.0, eps), 1e-6 + 1e-9 * max(1.0, eps)
    loose = EPSILON_ATOL + EPSILON_RTOL * eps
    return loose, loose


def check_privacy(*, manifest: dict[str, Any], states: Sequence[dict[str, Any]], committed_micro: Sequence[int],
                  opacus_version: str | None = None) -> PrivacyResult:
    """Raise CheckFailed unless every checkpoint's committed ε equals the one recomputed from its state (and the
    one its state.json records), and the last respects the declared budget. `states[i]` and `committed_micro[i]`
    belong to checkpoint i of the lineage. `opacus_version`: the version the run recorded (None: unknown)."""
    from provenance._chain.records import EPSILON_NOT_PRIVATE, epsilon_to_micro

    dp = manifest["training"].get("dp", {})
    mode = dp.get("mode")
    if mode == "non-private":
        for index, micro in enumerate(committed_micro):
            if micro != EPSILON_NOT_PRIVATE:
                raise CheckFailed(f"the run manifest says non-private but checkpoint {index} committed a finite ε",
                                  expected="no ε (non-private)", found=micro / 1e6)
        return PrivacyResult(False, [None] * len(committed_micro),
                             "trained without differential privacy (recorded as such)")
    if mode != "dp":
        raise CheckFailed("the run manifest's DP mode is unknown", expected="dp or non-private", found=mode)
    sigma, q, delta, accountant = dp_parameters(dp)
    size = manifest["training"].get("dataset_size")
    if not canonical.is_count(size, 1):
        raise CheckFailed("the run manifest's training.dataset_size is not a whole number of examples (δ is judged "
                          "against it)", expected="an integer ≥ 1", found=repr(size))
    if delta >= 1.0 / size:
        raise CheckFailed("the run's δ is at least 1/N: a mechanism may then publish a whole training record with "
                          "probability δ, so (ε, δ) is no privacy guarantee", expected=f"δ < 1/N = {1.0 / size:.3g} "
                          f"(N = {size} examples)", found=f"δ = {delta:.3g}")
    if not opacus_available():
        raise CheckInconclusive("ε cannot be recomputed here: opacus is not installed "
                                "(pip install torch==2.13.0 'prov[train]')")
    jobs = []
    for index, (state, micro) in enumerate(zip(states, committed_micro, strict=True)):
        if micro == EPSILON_NOT_PRIVATE:
            raise CheckFailed(f"the run manifest says DP but checkpoint {index} committed no ε",
                              expected="a finite ε", found="none")
        recorded = state.get("epsilon")
        if not isinstance(recorded, str) or epsilon_to_micro(_float(recorded, index)) != micro:
            raise CheckFailed(f"checkpoint {index}: the ε in its state.json is not the ε committed on chain",
                              expected=micro / 1e6, found=recorded)
        name, history = history_of(state, f"checkpoint {index}")
        _check_one(index=index, name=name, history=history, state=state, dp=dp)
        jobs.append((name if history else accountant, history, delta))
    recomputed = _recompute_all(jobs)
    exact = opacus_version is not None and opacus_version == _installed_opacus()
    for index, (micro, eps) in enumerate(zip(committed_micro, recomputed, strict=True)):
        value = micro / 1e6
        below, above = _tolerance(eps, exact)
        if not math.isfinite(eps) or (eps <= 0 and index > 0 and int(states[index].get("log_size", 0)) > 0):
            raise CheckFailed(f"checkpoint {index}: ε recomputed from its parameters is not a finite positive "
                              "number", expected="0 < ε < ∞", found=eps)
        if not value >= eps - below:
            raise CheckFailed(f"checkpoint {index}: the committed ε is lower than the ε its parameters actually "
                              "spend", expected=f"ε ≥ {eps:.6f}", found=f"ε = {value:.6f}")
        if not value <= eps + above:
            raise CheckFailed(f"checkpoint {index}: the committed ε does not match the recomputed one",
                              expected=f"ε = {eps:.6f}", found=f"ε = {value:.6f}")
    last = recomputed[-1]
    summary = (f"ε = {last:.4g} at δ = {delta:.3g} ({accountant}, σ = {sigma:g}, q = {q:g}, "
               f"{int(states[-1].get('log_size', 0))} steps); all {len(recomputed)} committed values recomputed and "
               f"matching" + ("" if exact else " (opacus version differs from the run's: 0.1% tolerance)"))
    budget = dp.get("epsilon_budget")
    if budget is not None:
        limit = _float(budget, -1)
        if not (math.isfinite(limit) and last <= limit + _tolerance(last, exact)[1]):
            raise CheckFailed("ε exceeds the run's declared privacy budget", expected=f"ε ≤ {budget}",
                              found=f"ε = {last:.6f}")
        summary += f", within budget {budget}"
    return PrivacyResult(True, list(recomputed), summary)


def _float(text: Any, index: int) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise CheckFailed(f"checkpoint {index}: an ε that is not a number", expected="a number",
                          found=text) from None
    return value


def _installed_opacus() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("opacus")
    except PackageNotFoundError:
        return None
