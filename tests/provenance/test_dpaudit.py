"""The one-run audit's statistics (provenance.dpaudit): the p-value of Steinke, Nasr and Jagielski (2023) and the
lower bound on ε, checked against a naive reference and on synthetic scores."""

from __future__ import annotations

import math
import random

import pytest

from provenance.dpaudit import default_guesses, epsilon_lower_bound, guess, p_value
from provenance.errors import UsageError


def binomial_tail(r: int, q: float, v: int) -> float:
    """P[Binomial(r, q) >= v], summed term by term (the reference)."""
    return sum(math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(v, r + 1))


@pytest.mark.parametrize(("r", "v", "eps"), [(32, 17, 0.0), (32, 28, 1.0), (10, 10, 2.5), (100, 60, 0.3), (8, 0, 1)])
def test_with_delta_zero_the_p_value_is_the_binomial_tail(r: int, v: int, eps: float) -> None:
    q = 1 / (1 + math.exp(-eps))
    assert p_value(m=200, r=r, v=v, epsilon=eps, delta=0.0) == pytest.approx(binomial_tail(r, q, v), rel=1e-9)


def test_delta_adds_the_papers_alpha_term() -> None:
    r, v, m, delta, eps = 20, 15, 64, 1e-3, 0.5
    q = 1 / (1 + math.exp(-eps))
    pmf = [math.comb(r, j) * q**j * (1 - q) ** (r - j) for j in range(r + 1)]
    alpha = max(sum(pmf[v - j] for j in range(1, i + 1)) / i for i in range(1, v + 1))
    expected = binomial_tail(r, q, v) + 2 * m * delta * alpha
    assert p_value(m=m, r=r, v=v, epsilon=eps, delta=delta) == pytest.approx(expected, rel=1e-9)
    assert p_value(m=10**9, r=r, v=v, epsilon=eps, delta=0.5) == 1.0  # clipped


def test_p_value_grows_with_epsilon_and_falls_with_correct_guesses() -> None:
    eps = [0.0, 0.25, 0.5, 1.0, 2.0, 4.0]
    by_eps = [p_value(m=64, r=32, v=26, epsilon=e, delta=1e-5) for e in eps]
    assert by_eps == sorted(by_eps) and by_eps[0] < by_eps[-1]
    by_v = [p_value(m=64, r=32, v=v, epsilon=1.0, delta=1e-5) for v in range(0, 33)]
    assert by_v == sorted(by_v, reverse=True) and by_v[0] > by_v[-1]
    bounds = [epsilon_lower_bound(m=64, r=32, v=v, delta=1e-5) for v in range(16, 33)]
    assert bounds == sorted(bounds) and bounds[0] == 0.0 and bounds[-1] > 2.0


def test_the_bound_is_where_the_p_value_crosses_the_level() -> None:
    bound = epsilon_lower_bound(m=64, r=32, v=30, delta=1e-5, confidence=0.95)
    assert 0 < bound < 50
    assert p_value(m=64, r=32, v=30, epsilon=bound, delta=1e-5) <= 0.05
    assert p_value(m=64, r=32, v=30, epsilon=bound + 1e-6, delta=1e-5) > 0.05
    assert epsilon_lower_bound(m=64, r=32, v=30, delta=1e-5, confidence=0.99) < bound


def test_perfect_separation_of_many_canaries_gives_a_positive_bound() -> None:
    m = 1000
    members = [i % 2 == 0 for i in range(m)]
    scores = [1.0 + i * 1e-6 if b else -1.0 - i * 1e-6 for i, b in enumerate(members)]
    found = guess(scores, members, k=default_guesses(m))
    assert (found.guesses, found.correct) == (500, 500)
    assert epsilon_lower_bound(m=m, r=found.guesses, v=found.correct, delta=1e-5) > 4.0


def test_random_scores_give_about_zero() -> None:
    rng = random.Random(7)
    bounds = []
    for _ in range(20):
        members = [rng.random() < 0.5 for _ in range(64)]
        found = guess([rng.random() for _ in range(64)], members, k=16)
        bounds.append(epsilon_lower_bound(m=64, r=found.guesses, v=found.correct, delta=1e-5))
    assert sum(b == 0.0 for b in bounds) >= 18 and max(bounds) < 0.6


def test_guesses_take_the_extremes_and_refuse_bad_k() -> None:
    scores = [0.5, -1.0, 2.0, 0.0, 1.0, -2.0]
    members = [True, False, True, True, False, False]
    # highest two: indices 2 (member), 4 (not); lowest two: 5 (not), 1 (not) -> 1 + 2 correct
    assert guess(scores, members, k=2) == guess(scores, members, k=2)
    assert (guess(scores, members, k=2).guesses, guess(scores, members, k=2).correct) == (4, 3)
    for k in (0, 4):
        with pytest.raises(UsageError, match="--guesses"):
            guess(scores, members, k=k)
    with pytest.raises(UsageError, match="confidence"):
        epsilon_lower_bound(m=6, r=4, v=3, delta=0.0, confidence=1.0)
