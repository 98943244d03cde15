"""Independent, torch-free upper bounds on ε with Google's dp-accounting: the verifier's own accountant, which shares
no code with the trainer's (opacus) and needs no torch.

The mechanism is the one DP-SGD with Poisson sampling runs: `steps` compositions of a Poisson-subsampled (rate q)
Gaussian mechanism (noise multiplier σ), neighbouring datasets differing by adding or removing one record. Two sound
upper bounds are computed and the smaller is the verifier's ε (the minimum of two upper bounds is an upper bound):

- RDP (`dp_accounting.rdp`): per-order Rényi DP computed once per (q, σ), scaled by the step count, converted at δ.
  Microseconds per checkpoint, but loose (≈1.5× PRV's ε for few steps).
- PLD (`dp_accounting.pld`, pessimistic estimate): a privacy-loss distribution discretised so that every rounding
  *over*-states the loss; its ε is an upper bound whatever the interval. Interval PLD_INTERVALS[0] first; a claim
  that falls below that bound is re-judged at the finer PLD_INTERVALS[1] before it fails.

All checkpoints of a run are composed in one pass (`pld_bounds`: the step PLD's spectrum raised to the gap between
consecutive checkpoints and multiplied on; 100 checkpoints of a 10,000-step run in ≈0.5 s, one process). Results are
cached in the auditor's cache (`epsilon-dpa-v1.json`, keyed by bound, q, σ, steps, δ, interval and the dp-accounting
version).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provenance import canonical
from provenance.errors import FormatError

PLD_INTERVALS = (1e-3, 1e-4)
# A committed ε may lie below the computed upper bound by at most this much (floating-point noise of the bound,
# which is itself pessimistic: the true ε is lower still). EPSILON_SLACK_ATOL is the commitment's unit (micro-ε).
EPSILON_SLACK_RTOL = 1e-4
EPSILON_SLACK_ATOL = 1e-6
CACHE_FILE = "epsilon-dpa-v1.json"
# Bounded work: a PLD's size grows with the privacy loss it spans (σ = 0.05 on one step: 0.7 M points, 0.4 GB, 5 s;
# smaller σ more), and σ is the trainer's choice. Where RDP's bound is above this ε — no meaningful privacy — only
# RDP is computed; a claim below it is then undecided (privacy.check_privacy: inconclusive), never failed.
EPSILON_CEILING = 100.0


@dataclass(frozen=True)
class Bound:
    """dp-accounting's upper bounds on ε for one checkpoint (None: not needed to judge the claim)."""

    steps: int
    rdp: float
    pld: float | None
    interval: float | None  # the PLD discretisation interval behind `pld`

    @property
    def epsilon(self) -> float:
        return self.rdp if self.pld is None else min(self.rdp, self.pld)

    @property
    def accountant(self) -> str:
        return "rdp" if self.pld is None or self.rdp <= self.pld else "pld"


def slack(bound: float) -> float:
    """How far below an upper bound a committed ε may be and still pass (see EPSILON_SLACK_RTOL)."""
    return EPSILON_SLACK_ATOL + EPSILON_SLACK_RTOL * bound


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("dp-accounting")
    except PackageNotFoundError:
        return "unknown"


def _lazy_imports() -> None:
    """Import only the parts of dp-accounting the verifier runs. Its package `__init__`s import every module it has
    (mechanism calibration pulls in scipy.optimize, the accountants scipy.signal): ~0.5 s of a cold `prov verify`.
    The packages are registered with their `__init__` run only when a name that only it defines is asked for (PEP
    562), and scipy.signal (dp-accounting's own convolutions, which the verifier replaces) loads on first use
    (importlib.util.LazyLoader). Nothing changes for code that uses either: it gets the whole module on first touch."""
    import importlib.util
    import sys

    for name in ("dp_accounting", "dp_accounting.pld", "dp_accounting.rdp"):
        if name not in sys.modules:
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return  # not installed: the caller's own import says so
            module = importlib.util.module_from_spec(spec)
            setattr(module, "__getattr__", functools.partial(_package_attribute, module))  # noqa: B010 (PEP 562)
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, module)
    if "scipy.signal" not in sys.modules:
        spec = importlib.util.find_spec("scipy.signal")
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
            module = importlib.util.module_from_spec(spec)
            sys.modules["scipy.signal"] = module
            # set on scipy too, so `from scipy import signal` finds it without the import system touching it
            setattr(sys.modules["scipy"], "signal", module)  # noqa: B010
            spec.loader.exec_module(module)


def _package_attribute(module: Any, attribute: str) -> Any:
    """A lazily initialised package's missing attribute: a submodule is imported alone; any other name runs the
    package's `__init__` (once) and is looked up again."""
    import importlib

    if importlib.util.find_spec(f"{module.__name__}.{attribute}") is not None:
        return importlib.import_module(f"{module.__name__}.{attribute}")
    del module.__getattr__
    module.__spec__.loader.exec_module(module)
    return getattr(module, attribute)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """dp-accounting logs (through absl) every RDP order it excludes; excluding orders only loosens the bound, and
    the verifier's output is its report, so those warnings are silenced while it runs."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def rdp_bounds(*, q: float, sigma: float, steps: Sequence[int], delta: float) -> list[float]:
    """RDP upper bound on ε at δ for each step count (0 steps: 0)."""
    _lazy_imports()
    import numpy as np
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    orders = np.array(rdp.DEFAULT_RDP_ORDERS, dtype=float)
    with _quiet():  # one order's RDP per (q, σ), as RdpAccountant.compose computes it; n steps add up linearly
        per_step = np.asarray(rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, orders), dtype=float)
        return [0.0 if n == 0 else float(rdp.compute_epsilon(orders, per_step * n, delta)[0]) for n in steps]


def pld_bound(job: tuple[float, float, int, float, float]) -> float:
    """PLD (pessimistic) upper bound on ε at δ: job = (q, σ, steps, δ, interval)."""
    _lazy_imports()
    q, sigma, steps, delta, interval = job
    if steps == 0:
        return 0.0
    with _quiet():
        return epsilon_for_delta(_self_compose(q, sigma, interval, steps), delta)


def epsilon_for_delta(pld: Any, delta: float) -> float:
    """`pld.get_epsilon_for_delta(delta)` for dense pmfs, with dp-accounting 0.6.0's algorithm
    (`_get_epsilon_for_delta`: walk the losses from the largest down, stop where ε would fall below the next loss)
    vectorised with cumulative sums instead of a Python loop (it was half the time); equal to the library's up to
    summation order (tested)."""
    from dp_accounting.pld import pld_pmf

    parts = [pld._pmf_remove] if pld._symmetric else [pld._pmf_remove, pld._pmf_add]
    if not all(type(p) is pld_pmf.DensePLDPmf for p in parts):
        return float(pld.get_epsilon_for_delta(delta))
    return max(_dense_epsilon(p, delta) for p in parts)


def _dense_epsilon(pmf: Any, delta: float) -> float:
    """One dense pmf's ε at δ. The walk from the largest loss down usually stops long before the smallest, so the
    arrays are built in growing chunks and the walk stops at the first chunk where it ends; prefix sums carry over
    (np.cumsum is sequential), so every value is the one a whole-array pass gives, bit for bit (tested)."""
    import numpy as np

    infinity = float(pmf._infinity_mass)
    if infinity > delta:
        return math.inf
    probs = np.flip(np.asarray(pmf._probs, dtype=np.float64))  # largest loss first
    size, step = len(probs), pmf._discretization
    top = (pmf._lower_loss + size - 1) * step
    sum_p, sum_e = 0.0, 0.0  # prefix sums so far: of probs, of exp(-loss)·probs
    last_upper, last_lower = infinity, 0.0  # mass_upper, mass_lower after the elements taken so far
    start, chunk, underflow_at = 0, 4096, -1
    while start < size:
        end = min(size, start + chunk)
        losses = top - np.arange(start, end) * step
        part = probs[start:end]
        taken = np.cumsum(np.concatenate(([sum_p], part)))[1:]
        upper = infinity + taken  # mass_upper after taking element k
        lower = np.cumsum(np.concatenate(([sum_e], np.exp(-losses) * part)))[1:]  # mass_lower after element k
        before_upper = np.concatenate(([last_upper], upper[:-1]))
        before_lower = np.concatenate(([last_lower], lower[:-1]))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # inf: the walk stops there, as it should
            stop = (before_upper > delta) & (before_lower > 0) & (
                np.log((before_upper - delta) / np.where(before_lower > 0, before_lower, 1.0)) >= losses)
        k = int(np.argmax(stop)) if stop.any() else len(part)  # the first element not taken, in this chunk
        underflow = (upper[:k] >= delta) & (lower[:k] == 0)
        if underflow_at < 0 and underflow.any():
            underflow_at = start + int(np.argmax(underflow))
        if underflow_at >= 0:  # exp(-loss) was 0 for everything taken: the library returns that loss
            return max(0.0, float(top - underflow_at * step))
        if k < len(part):
            last_upper, last_lower = float(before_upper[k]), float(before_lower[k])
            break
        sum_p, sum_e = float(taken[-1]), float(lower[-1])
        last_upper, last_lower = float(upper[-1]), float(lower[-1])
        start, chunk = end, chunk * 2
    if last_upper <= last_lower + delta:
        return 0.0
    return float(math.log((last_upper - delta) / last_lower))


TAIL_MASS = 1e-15  # dp-accounting's default tail truncation, counted as infinite loss (pessimistic)


def _self_compose(q: float, sigma: float, interval: float, steps: int) -> Any:
    """`one.self_compose(steps)`, computed exactly as dp-accounting 0.6.0 does (`DensePLDPmf.self_compose` with
    `common.self_convolve`), except that each pmf's log moment-generating function, which fixes the truncation bounds
    and does not depend on `steps`, is computed once per run instead of once per checkpoint (it was two thirds of
    the time). Tests compare the result with dp-accounting's own, bit for bit. Other pmf kinds use the library."""
    from dp_accounting.pld import privacy_loss_distribution

    one = _one_step(q, sigma, interval)
    mgfs = _log_mgfs(q, sigma, interval)
    if mgfs is None:
        return one.self_compose(steps)
    parts = [one._pmf_remove] if one._symmetric else [one._pmf_remove, one._pmf_add]
    composed = [_dense_self_compose(p, steps, *m) for p, m in zip(parts, mgfs, strict=True)]
    return privacy_loss_distribution.PrivacyLossDistribution(*composed)


def _truncation(size: int, steps: int, orders: Any, log_mgfs: list[float]) -> tuple[int, int]:
    """The index range [lower, upper] of `steps` self-convolutions of a pmf of `size` points that dp-accounting keeps
    (Chernoff bounds, as common.compute_self_convolve_bounds; the mass outside is at most TAIL_MASS)."""
    lower, upper = 0, (size - 1) * steps
    for order, log_mgf in zip(orders, log_mgfs, strict=True):
        bound = (steps * log_mgf + math.log(2 / TAIL_MASS)) / order
        if not math.isfinite(bound):
            continue
        if order > 0:
            upper = min(upper, math.ceil(bound))
        if order < 0:
            lower = max(lower, math.floor(bound))
    return lower, upper


def _dense_pmf(pmf: Any, steps: int, lower: int, out: Any) -> Any:
    """The composed pmf from its kept points: offset, and the infinite-loss mass that the tail truncation adds."""
    from dp_accounting.pld import pld_pmf

    infinity = TAIL_MASS - math.expm1(steps * math.log1p(-pmf._infinity_mass))
    return pld_pmf.DensePLDPmf(pmf._discretization, pmf._lower_loss * steps + lower, out, infinity,
                               pmf._pessimistic_estimate)


def _dense_self_compose(pmf: Any, steps: int, orders: Any, log_mgfs: list[float]) -> Any:
    import numpy as np
    from scipy import fft

    probs = pmf._probs
    lower, upper = _truncation(len(probs), steps, orders, log_mgfs)
    length = upper - lower + 1
    fast = fft.next_fast_len(max(length, len(probs)))
    out = np.array(np.roll(np.real(fft.ifft(fft.fft(probs, fast) ** steps)), -lower)[:length])
    return _dense_pmf(pmf, steps, lower, out)


def pld_bounds(*, q: float, sigma: float, delta: float, interval: float, steps: Sequence[int]) -> list[float]:
    """PLD (pessimistic) upper bounds on ε at δ for many step counts of one run at once, composed incrementally: one
    step's spectrum (a real FFT at one length that fits the largest composition) raised to the gap between
    consecutive step counts and multiplied on, so a checkpoint costs a product and an inverse FFT, not a complex
    power and two FFTs at its own length (`_self_compose`: 0.03 s each at 10,000 steps). Truncation and tail mass are
    dp-accounting's; the longer circular convolution only wraps a different ≤ TAIL_MASS of mass, so ε agrees with
    `pld_bound` up to the FFTs' rounding: ≤ 1e-9 relative at δ = 1e-3, ≤ 1.3e-7 at 1e-7, ≤ 8.2e-6 at 1e-9 (where ε rests
    on 1e-9 of mass) over q 0.001–1, σ 0.6–5: below the 1e-4·bound slack, and the library's own rounding at another
    FFT length is of the same size (tests/provenance/test_accounting.py)."""
    _lazy_imports()
    from dp_accounting.pld import privacy_loss_distribution
    from scipy import fft

    with _quiet():
        one = _one_step(q, sigma, interval)
        mgfs = _log_mgfs(q, sigma, interval)
    if mgfs is None:
        return [pld_bound((q, sigma, n, delta, interval)) for n in steps]
    parts = [one._pmf_remove] if one._symmetric else [one._pmf_remove, one._pmf_add]
    kept = {n: [_truncation(len(p._probs), n, *m) for p, m in zip(parts, mgfs, strict=True)] for n in set(steps) if n}
    sizes = [fft.next_fast_len(max([len(p._probs)] + [u - lo + 1 for lo, u in (r[k] for r in kept.values())]),
                               real=True) for k, p in enumerate(parts)]
    spectra = [fft.rfft(p._probs, size) for p, size in zip(parts, sizes, strict=True)]
    current: list[Any] = [None] * len(parts)
    powers: dict[tuple[int, int], Any] = {}
    found: dict[int, float] = {0: 0.0}
    previous = 0
    for n in sorted(kept):
        composed = []
        for k, pmf in enumerate(parts):
            if (k, n - previous) not in powers:
                powers[k, n - previous] = spectra[k] ** (n - previous)
            step = powers[k, n - previous]
            current[k] = step if current[k] is None else current[k] * step
            lower, upper = kept[n][k]
            out = _wrapped(fft.irfft(current[k], sizes[k]), lower, upper - lower + 1)
            composed.append(_dense_pmf(pmf, n, lower, out))
        previous = n
        with _quiet():
            found[n] = epsilon_for_delta(privacy_loss_distribution.PrivacyLossDistribution(*composed), delta)
    return [found[n] for n in steps]


def _wrapped(values: Any, start: int, length: int) -> Any:
    """`np.roll(values, -start)[:length]` as a copy, without rolling the whole array."""
    import numpy as np

    start %= len(values)
    if start + length <= len(values):
        return values[start:start + length].copy()
    return np.concatenate((values[start:], values[:start + length - len(values)]))


@functools.lru_cache(maxsize=8)
def _log_mgfs(q: float, sigma: float, interval: float) -> list[tuple[Any, list[float]]] | None:
    """Orders and log-MGFs of each pmf of `_one_step(q, sigma, interval)`, as common.compute_self_convolve_bounds
    computes them; None when a pmf is not dense (then the library composes)."""
    import numpy as np
    from dp_accounting.pld import pld_pmf
    from scipy import special

    one = _one_step(q, sigma, interval)
    parts = [one._pmf_remove] if one._symmetric else [one._pmf_remove, one._pmf_add]
    if not all(type(p) is pld_pmf.DensePLDPmf for p in parts):
        return None
    out = []
    for pmf in parts:
        probs = pmf._probs
        orders = np.concatenate((np.arange(-20, 0), np.arange(1, 21))) / len(probs)
        out.append((orders, [special.logsumexp(np.arange(len(probs)) * order, b=probs) for order in orders]))
    return out


@functools.lru_cache(maxsize=8)
def _one_step(q: float, sigma: float, interval: float) -> Any:
    """One step's pessimistic PLD (≈0.1 s to build): every checkpoint of a run composes the same one."""
    _lazy_imports()
    from dp_accounting.pld import privacy_loss_distribution as pld

    return pld.from_gaussian_mechanism(standard_deviation=sigma, sampling_prob=q,
                                       value_discretization_interval=interval, pessimistic_estimate=True)


def _key(job: tuple[float, float, int, float, float]) -> str:
    q, sigma, steps, delta, interval = job
    return canonical.encode(["pld", repr(q), repr(sigma), steps, repr(delta), repr(interval), version()]).decode()


def load_cache(name: str) -> tuple[Path | None, dict[str, str]]:
    """The auditor's own cache of ε results: the same inputs always give the same ε, and an evaluation costs up to
    seconds. Never shared, never taken from a run: it only holds what this machine computed."""
    try:
        root = Path(os.environ.get("PROV_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                    / "prov")
        root.mkdir(parents=True, exist_ok=True)
        path = root / name
        data = canonical.load_json(path.read_bytes(), source=str(path)) if path.is_file() else {}
    except (OSError, FormatError):
        return None, {}
    return path, {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def store_cache(path: Path | None, cache: dict[str, str], fresh: dict[str, str]) -> None:
    if path is not None and fresh:
        from provenance.fsutil import atomic_write

        with contextlib.suppress(OSError):  # a cache that cannot be written only costs time
            atomic_write(path, canonical.encode({**cache, **fresh}))


def _pld_all(jobs: list[tuple[float, float, int, float, float]]) -> dict[tuple[float, float, int, float, float], float]:
    path, cache = load_cache(CACHE_FILE)
    results = {j: float(cache[_key(j)]) for j in jobs if _key(j) in cache}
    todo = sorted({j for j in jobs if j not in results})
    for q, sigma, delta, interval in sorted({(j[0], j[1], j[3], j[4]) for j in todo}):  # one run: one group
        group = [j for j in todo if (j[0], j[1], j[3], j[4]) == (q, sigma, delta, interval)]
        found = pld_bounds(q=q, sigma=sigma, delta=delta, interval=interval, steps=[j[2] for j in group])
        results.update(zip(group, found, strict=True))
    store_cache(path, cache, {_key(j): repr(results[j]) for j in todo})
    return results


def upper_bounds(*, q: float, sigma: float, delta: float, steps: Sequence[int],
                 committed: Sequence[float]) -> list[Bound]:
    """The bound each checkpoint's committed ε is judged against: RDP alone where the claim is at least RDP's bound,
    else PLD, refined once before a claim is found understated. The last checkpoint always gets its PLD bound (the
    number the report states). Above EPSILON_CEILING only RDP is computed (`Bound.pld` stays None)."""
    rdp = rdp_bounds(q=q, sigma=sigma, steps=steps, delta=delta)
    last = len(steps) - 1
    need = [i for i, (c, r) in enumerate(zip(committed, rdp, strict=True))
            if steps[i] > 0 and r <= EPSILON_CEILING and (i == last or c < r - slack(r))]
    bounds: dict[int, tuple[float, float]] = {}
    for interval in PLD_INTERVALS:
        if not need:
            break
        found = _pld_all([(q, sigma, steps[i], delta, interval) for i in need])
        for i in need:
            bounds[i] = (found[(q, sigma, steps[i], delta, interval)], interval)
        need = [i for i in need if committed[i] < min(rdp[i], bounds[i][0]) - slack(min(rdp[i], bounds[i][0]))]
    return [Bound(n, r, bounds[i][0] if i in bounds else None, bounds[i][1] if i in bounds else None)
            for i, (n, r) in enumerate(zip(steps, rdp, strict=True))]


def describe(bound: Bound) -> dict[str, Any]:
    """A checkpoint's bounds as the report shows them."""
    return {"steps": bound.steps, "epsilon": bound.epsilon, "accountant": bound.accountant, "rdp": bound.rdp,
            "pld": bound.pld, "pld_interval": bound.interval}
