"""The two-sample tests on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from tokenmill.observability.drift.two_sample import (
    _permutation_p,
    categorical_test,
    ks_test,
    mmd_test,
    psi,
)

TRIALS = 200


def _null_p_values(draw, test) -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.array([test(*draw(rng), rng).p_value for _ in range(TRIALS)])


def _assert_uniform_enough(p: np.ndarray) -> None:
    """Under the null a valid p-value is (super-)uniform: about 5% fall at or below
    0.05 (at most 18 of 200 is beyond a 1-in-1000 binomial fluke at 5%) and the whole
    distribution is not far from uniform."""
    assert np.count_nonzero(p <= 0.05) <= 18, np.sort(p)[:20]
    assert np.count_nonzero(p <= 0.5) >= 70  # not stuck near 1 (a test that never fires)
    assert stats.kstest(p, "uniform").pvalue > 1e-3


def scripted(pattern):
    """A statistic whose i-th permuted value is pattern(i), whatever the relabelling."""
    drawn = [0]

    def statistic(subsets):
        start = drawn[0]
        drawn[0] += len(subsets)
        return np.array([pattern(i) for i in range(start, drawn[0])], dtype=float)

    return statistic


def _p(pattern, permutations=999):
    return _permutation_p(scripted(pattern), 5.0, 10, 3, permutations, np.random.default_rng(0))


def test_permutation_p_value_without_exceedances_counts_the_observed_sample():
    assert _p(lambda i: 1.0) == pytest.approx(1 / 1000)
    assert _p(lambda i: 6.0 if i == 3 else 1.0) == pytest.approx(2 / 1000)


def test_permutation_p_value_stops_at_the_tenth_exceedance():
    assert _p(lambda i: 6.0) == pytest.approx(10 / 10)
    assert _p(lambda i: 5.0 if i % 5 == 4 else 1.0) == pytest.approx(10 / 50)  # ties count
    # Nine exceedances only: no early stop, the full count.
    assert _p(lambda i: 9.0 if i < 9 else 1.0) == pytest.approx(10 / 1000)


def test_mmd_null_p_values_are_uniform():
    def draw(rng):
        return rng.normal(size=(40, 8)), rng.normal(size=(40, 8))

    p = _null_p_values(draw, lambda x, y, rng: mmd_test(x, y, 199, rng))
    _assert_uniform_enough(p)


def test_mmd_detects_a_mean_shift_and_scores_it_higher():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 8))
    same = mmd_test(x, rng.normal(size=(40, 8)), 999, rng)
    shifted = mmd_test(x, rng.normal(loc=0.8, size=(40, 8)), 999, rng)
    assert shifted.p_value == pytest.approx(1 / 1000)
    assert shifted.score > 5 * same.score
    assert same.test == "mmd"


def test_mmd_is_scale_invariant_through_the_median_heuristic():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 4)), rng.normal(loc=0.3, size=(30, 4))
    a = mmd_test(x, y, 499, np.random.default_rng(7))
    b = mmd_test(1000 * x, 1000 * y, 499, np.random.default_rng(7))
    assert a.p_value == b.p_value
    assert a.score == pytest.approx(b.score)


def test_ks_null_p_values_on_discrete_lengths_are_at_most_uniform():
    def draw(rng):
        return rng.poisson(30, 200), rng.poisson(30, 40)

    p = _null_p_values(draw, lambda x, y, rng: ks_test(x, y))
    assert np.count_nonzero(p <= 0.05) <= 18  # ties make KS conservative, never liberal


def test_ks_detects_longer_values():
    rng = np.random.default_rng(0)
    result = ks_test(rng.poisson(30, 200), rng.poisson(45, 40))
    assert result.p_value < 1e-6 and result.score > 0.5


def test_categorical_null_p_values_are_uniform():
    labels, weights = ["en", "fr", "de", "none"], [0.8, 0.1, 0.07, 0.03]

    def draw(rng):
        return list(rng.choice(labels, 200, p=weights)), list(rng.choice(labels, 40, p=weights))

    p = _null_p_values(draw, lambda x, y, rng: categorical_test(x, y, 199, rng))
    _assert_uniform_enough(p)


def test_categorical_detects_a_changed_mix_and_a_new_category():
    rng = np.random.default_rng(0)
    ref = ["en"] * 180 + ["fr"] * 20
    changed = categorical_test(ref, ["en"] * 20 + ["fr"] * 20, 999, rng)
    assert changed.p_value < 0.005
    assert changed.score == pytest.approx(0.5 * (abs(0.9 - 0.5) + abs(0.1 - 0.5)))
    new = categorical_test(ref, ["en"] * 30 + ["cyrillic"] * 10, 999, rng)
    assert new.p_value < 0.005 and new.score == pytest.approx(0.25)


def test_categorical_with_one_category_is_no_evidence():
    result = categorical_test(["stop"] * 50, ["stop"] * 40, 99, np.random.default_rng(0))
    assert (result.score, result.p_value) == (0.0, 1.0)


def test_psi_known_values():
    ref = np.arange(1000, dtype=float)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    # All window mass in the top decile: PSI = sum over bins of (w - r) ln(w / r).
    w = np.full(10, 1e-4)
    w[-1] = 1.0
    r = np.full(10, 0.1)
    assert psi(ref, np.full(40, 999.0)) == pytest.approx(float(((w - r) * np.log(w / r)).sum()))
