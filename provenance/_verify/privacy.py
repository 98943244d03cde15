"""Judge the ε committed for every checkpoint of a lineage against an upper bound the verifier computes itself, from
the recorded DP parameters, with an accountant independent of the trainer's and of torch (provenance._verify.
accounting: Google's dp-accounting, PLD and RDP). A trainer cannot commit a tiny ε for an earlier checkpoint: each
is judged.

Rule: a committed ε passes when it is at least dp-accounting's upper bound minus a numerical slack of
1e-6 + 1e-4·bound (accounting.slack). A conservative claim (larger) passes; an understated one fails with its own
message. Honest opacus runs pass: opacus' PRV ε (its upper estimate, eps_error 0.01) measured 0.0101–0.0109 above
dp-accounting's PLD bound at interval 1e-4 and ≥ 0.007 above it at 1e-3 (q 0.001–1, σ 0.5–5, up to 10,000 steps),
and opacus' RDP ε is at least dp-accounting's PLD bound (docs/verifier.md, "ε").

`cross_check_opacus` recomputes the last checkpoint's ε with opacus where it is installed, for the report only
(PRV results in the auditor's cache, `epsilon-v1.json`, keyed by accountant, history, δ and opacus version).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from provenance import canonical
from provenance._verify import accounting
from provenance._verify.checks import CheckFailed, CheckInconclusive
from provenance.errors import FormatError

EPSILON_RTOL = 1e-3
ACCOUNTANTS = ("rdp", "prv")  # gdp is asymptotic: not a guarantee prov will vouch for
EPSILON_ATOL = 1e-6
History = tuple[tuple[float, float, int], ...]


@dataclass(frozen=True)
class PrivacyResult:
    private: bool
    recomputed: list[float | None]  # per checkpoint of the lineage: dp-accounting's upper bound
    summary: str
    committed: list[float | None] = field(default_factory=list)  # the trainer's ε, as committed on chain
    bounds: list[dict[str, Any]] = field(default_factory=list)  # accounting.describe() of each checkpoint
    opacus: float | None = None  # the last checkpoint's ε recomputed with opacus (cross_check_opacus), if asked
    statement: list[str] = field(default_factory=list)  # privacy_statement(): what the ε covers and what not

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


def _recompute_all(jobs: Sequence[tuple[str, History, float]]) -> list[float]:
    unique = sorted(set(jobs), key=lambda j: sum(n for _, _, n in j[1]), reverse=True)
    path, cache = accounting.load_cache(CACHE_FILE)
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
    accounting.store_cache(path, cache, {_cache_key(j): repr(results[j]) for j in slow})
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


def cross_check_opacus(result: PrivacyResult, *, manifest: dict[str, Any], states: Sequence[dict[str, Any]],
                       opacus_version: str | None) -> PrivacyResult:
    """The last checkpoint's ε recomputed with opacus, the trainer's own library, beside dp-accounting's bound (for
    information: the verdict rests on the independent bound). Costs torch's import and a PRV evaluation (cached)."""
    if not result.private or not states:
        return result
    if not opacus_available():
        return replace(result, summary=result.summary + "; opacus is not installed here, so its ε was not recomputed")
    dp = manifest["training"]["dp"]
    if opacus_version is None:  # the version the run recorded, if it did
        versions = (manifest.get("software") or {}).get("versions")
        opacus_version = versions.get("opacus") if isinstance(versions, dict) else None
    name, history = history_of(states[-1], "the last checkpoint")
    eps = _recompute_all([(name if history else str(dp.get("accountant")), history, float(dp["delta"]))])[0]
    mine = _installed_opacus()
    other = "" if opacus_version == mine else f"; the run recorded opacus {opacus_version}"
    crossed = replace(result, opacus=eps, summary=f"{result.summary}; opacus {mine} ({name}) recomputes ε = "
                      f"{eps:.4g}{other}")
    return replace(crossed, statement=privacy_statement(manifest, crossed))


def check_privacy(*, manifest: dict[str, Any], states: Sequence[dict[str, Any]], committed_micro: Sequence[int],
                  opacus_version: str | None = None) -> PrivacyResult:
    """Raise CheckFailed unless every checkpoint's committed ε (the one its state.json records too) is at least
    dp-accounting's upper bound for its parameters and step count, and the last bound respects the declared budget.
    `states[i]` and `committed_micro[i]` belong to checkpoint i of the lineage. `opacus_version`: the version the run
    recorded (None: unknown), named in the summary."""
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
    if importlib.util.find_spec("dp_accounting") is None:
        raise CheckInconclusive("ε cannot be bounded here: dp-accounting is not installed (pip install "
                                "dp-accounting==0.6.0, a dependency of prov)")
    committed = []
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
        committed.append(micro / 1e6)
    steps = [sum(n for _, _, n in history_of(state, "")[1]) for state in states]  # = log_size (_check_one)
    bounds = accounting.upper_bounds(q=q, sigma=sigma, delta=delta, steps=steps, committed=committed)
    for index, (value, bound) in enumerate(zip(committed, bounds, strict=True)):
        eps = bound.epsilon
        if not math.isfinite(eps):
            raise CheckFailed(f"checkpoint {index}: no finite ε bounds what its parameters spend",
                              expected="0 < ε < ∞", found=eps)
        if not value >= eps - accounting.slack(eps) and bound.pld is None and bound.rdp > accounting.EPSILON_CEILING:
            raise CheckInconclusive(f"checkpoint {index}: the committed ε ({value:.6g}) is below RDP's bound "
                                    f"({eps:.6g}), and above ε = {accounting.EPSILON_CEILING:g} the verifier does not "
                                    "compute the tighter PLD bound (its work grows with the loss): not decided here")
        if not value >= eps - accounting.slack(eps):
            raise CheckFailed(f"checkpoint {index}: the committed ε is lower than the ε its parameters actually "
                              f"spend (dp-accounting {bound.accountant.upper()} upper bound)",
                              expected=f"ε ≥ {eps:.6f}", found=f"ε = {value:.6f}")
    last = bounds[-1]
    summary = (f"ε ≤ {last.epsilon:.4g} at δ = {delta:.3g} by dp-accounting {accounting.version()} "
               f"({last.accountant.upper()}; RDP {last.rdp:.4g}), independent of the trainer's opacus: σ = {sigma:g}, "
               f"q = {q:g}, {steps[-1]} steps; the committed ε ({committed[-1]:.4g}, {accountant} of opacus "
               f"{opacus_version or 'unrecorded'}) is at least the "
               f"bound at all {len(bounds)} checkpoints")
    budget = dp.get("epsilon_budget")
    if budget is not None:
        limit = _float(budget, -1)
        if not (math.isfinite(limit) and last.epsilon <= limit + accounting.slack(limit)):
            raise CheckFailed("ε exceeds the run's declared privacy budget", expected=f"ε ≤ {budget}",
                              found=f"ε ≥ {last.epsilon:.6f}")
        summary += f", within budget {budget}"
    result = PrivacyResult(True, [b.epsilon for b in bounds], summary, committed=list(committed),
                           bounds=[accounting.describe(b) for b in bounds])
    return replace(result, statement=privacy_statement(manifest, result))


# Step-record formats whose published records carry each step's exact example count (docs/formats.md).
COUNT_PUBLISHED = ("prov.step.v1", "prov.step.v2")


def privacy_statement(manifest: dict[str, Any], result: PrivacyResult) -> list[str]:
    """The privacy guarantee as a compliance officer files it, in sentences: the unit of privacy, the sampler, the
    mechanism, each accountant's ε at δ, and what the guarantee does not cover. Empty for a non-private run."""
    if not result.private or not result.bounds:
        return []
    training = manifest["training"]
    dp = training["dp"]
    found = manifest.get("formats")
    formats: dict[str, Any] = found if isinstance(found, dict) else {}
    last, committed = result.bounds[-1], result.committed[-1]
    clip = dp.get("max_grad_norm")
    pld = "not computed" if last["pld"] is None else f"{last['pld']:.4g}"
    lines = [
        f"Unit of privacy: one record of the committed dataset ({training['dataset_size']} records); the guarantee "
        "bounds what the published adapter and records reveal about adding or removing any one record.",
        f"Sampler: Poisson, every record joins each step independently with probability q = {dp['sample_rate']}, "
        f"drawn from keys derived from the run's secret seed{_keying(formats)}.",
        f"Mechanism: DP-SGD for {last['steps']} steps, each record's gradient clipped to norm C = {clip}, Gaussian "
        f"noise of standard deviation σ·C with σ = {dp['noise_multiplier']}.",
        f"ε at δ = {dp['delta']}: {result.recomputed[-1]:.4g} (the verifier's bound, dp-accounting "
        f"{accounting.version()}: PLD {pld}, RDP {last['rdp']:.4g}); {committed:.4g} committed by the trainer "
        f"({dp['accountant']}, opacus)" + (f"; opacus here: {result.opacus:.4g}" if result.opacus is not None else "")
        + ".",
        "Not covered: a person with several records in the dataset (each duplicate multiplies what can be learnt "
        "about them: group privacy); the public schedule (step count, learning rates, sample rate, checkpoint times: "
        "fixed before training and published); the base model and its own training data"
        + ("; each step's exact example count, which this run's step records publish"
           if formats.get("step", "prov.step.v1") in COUNT_PUBLISHED else "") + ".",
    ]
    return lines


def _keying(formats: dict[str, Any]) -> str:
    """How the sampler's keys were fixed (docs/verifier.md, Known limits)."""
    if formats.get("sampler") == "prov.poisson.v2":
        return (" and the hash of the block that included the run's registration (prov.keys.v1), which exists only "
                "once the registration is on chain, so seeds ground before registering cannot choose the sample")
    return ("; the trainer chose that seed before registering, so a trainer grinding seeds is not excluded "
            "(known limit of this run's formats)")


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
