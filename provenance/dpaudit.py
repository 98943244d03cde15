"""The empirical lower bound on ε from one training run's canaries (Steinke, Nasr and Jagielski, 2023, "Privacy
auditing with one (1) training run", Theorem 3.1 / Algorithm 1). Torch-free: scores in, numbers out.

m canaries, each trained on independently with probability 1/2. The auditor scores every canary (higher: more
likely trained on), guesses "member" for the k highest scores and "non-member" for the k lowest (k fixed before
looking), and abstains on the rest: r = 2k guesses, v of them correct. If training was (ε, δ)-DP, the p-value

    q = 1 / (1 + e^-ε)
    β = P[Binomial(r, q) >= v]
    α = max over i in 1..v of (sum_{j=1..i} P[Binomial(r, q) = v - j]) / i
    p(ε) = min(1, β + 2 m δ α)

bounds the chance of v or more correct guesses. p grows with ε; every ε with p(ε) <= 1 - confidence is rejected,
and the bound is the largest of them (bisection on [0, 50]); 0 when even ε = 0 is not rejected. A lower bound from
one run is small for a correctly private run: it cannot prove privacy, only contradict a wrong claim.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from provenance.errors import UsageError

EPSILON_MAX = 50.0
_BISECTIONS = 60


def p_value(*, m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """The p-value of v correct guesses out of r among m canaries under (ε, δ)-DP (module docstring)."""
    from scipy.stats import binom

    if not 0 <= v <= r <= m:
        raise UsageError(f"need 0 <= correct ({v}) <= guesses ({r}) <= canaries ({m})")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(binom.sf(v - 1, r, q))
    alpha, total = 0.0, 0.0
    for i in range(1, v + 1):
        total += float(binom.pmf(v - i, r, q))
        alpha = max(alpha, total / i)
    return min(1.0, beta + 2.0 * m * delta * alpha)


def epsilon_lower_bound(*, m: int, r: int, v: int, delta: float, confidence: float = 0.95) -> float:
    """The largest ε in [0, 50] rejected at `confidence` (p-value <= 1 - confidence); 0 if none is."""
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"--confidence: must be in (0, 1), got {confidence}")
    if not 0.0 <= delta < 1.0:
        raise UsageError(f"δ must be in [0, 1), got {delta}")
    level = 1.0 - confidence

    def rejected(eps: float) -> bool:
        return p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) <= level

    if not rejected(0.0):
        return 0.0
    if rejected(EPSILON_MAX):
        return EPSILON_MAX
    lo, hi = 0.0, EPSILON_MAX
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rejected(mid) else (lo, mid)
    return lo


def default_guesses(m: int) -> int:
    """Guesses on each side when not given: a quarter of the canaries (at least one)."""
    return max(1, m // 4)


@dataclass(frozen=True)
class Guesses:
    guesses: int  # r = 2k
    correct: int  # v


def guess(scores: Sequence[float], members: Sequence[bool], *, k: int) -> Guesses:
    """Guess "member" for the k highest scores, "non-member" for the k lowest (ties by canary order), and count
    the correct guesses."""
    m = len(scores)
    if len(members) != m:
        raise UsageError("one membership bit per score")
    if k < 1 or 2 * k > m:
        raise UsageError(f"--guesses: k must be in 1..{m // 2} for {m} canaries (k on each side), got {k}")
    if any(math.isnan(s) for s in scores):
        raise UsageError("a canary's score is not a number")
    order = sorted(range(m), key=lambda i: (scores[i], i))
    correct = sum(1 for i in order[m - k:] if members[i]) + sum(1 for i in order[:k] if not members[i])
    return Guesses(2 * k, correct)
