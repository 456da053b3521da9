"""Two-sample tests: is the live window drawn from the reference's distribution?

Each returns a TestResult with an interpretable score and a p-value that is valid
(false-alarm rate at most alpha when both samples come from one distribution) at any
sample size:

- `mmd_test`: vectors (prompt embeddings). Squared maximum mean discrepancy with a
  Gaussian kernel whose width is the median pairwise distance of the pooled sample;
  p-value by permutation.
- `ks_test`: numbers (lengths, mean logprobs). Two-sample Kolmogorov-Smirnov
  (scipy). With ties (integer lengths) its p-value is conservative.
- `categorical_test`: labels (script, finish reason). Score: total-variation distance
  between the two frequency tables; p-value by permutation of the chi-square
  statistic, so sparse tables and categories unseen in the reference need no
  large-sample approximation.

Permutation p-values are Monte Carlo estimates that are themselves valid p-values
(see `_permutation_p`); the smallest is 1 / (1 + permutations), so use several times
1 / alpha permutations.

`psi` is the population stability index with a fixed threshold: the common practice
that the calibration benchmark shows to misfire on small windows. Nothing here uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 64
"""Permutations evaluated per vectorised batch."""
STOP_AFTER = 10
"""Permuted statistics at least as large as the observed one after which sampling stops."""


@dataclass(frozen=True)
class TestResult:
    """The outcome of one two-sample test."""

    score: float
    """The size of the difference (MMD squared, KS distance, total variation)."""
    p_value: float
    test: str
    """"mmd", "ks" or "chi2_permutation"."""

    __test__ = False  # not a pytest test class, despite the name


def _subsets(total: int, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` uniformly random `size`-subsets of range(total): (count, size) indices.
    (The `size` smallest of uniform random keys: linear time per row.)"""
    keys = rng.random((count, total))
    return np.argpartition(keys, size - 1, axis=1)[:, :size]


def _permutation_p(
    statistic,
    observed: float,
    total: int,
    size: int,
    num_permutations: int,
    rng: np.random.Generator,
) -> float:
    """Monte Carlo permutation p-value with Besag and Clifford's sequential stop: draw
    relabellings in chunks until STOP_AFTER of them reach the observed statistic (then
    p = STOP_AFTER / draws) or `num_permutations` are drawn (then p = (1 + hits) /
    (1 + draws)). Both are valid p-values; the stop makes clearly unremarkable windows
    cheap, while small p-values still get every permutation."""
    # A relative tolerance keeps float noise from turning ties into "smaller".
    bar = observed - 1e-12 * max(1.0, abs(observed))
    hits = drawn = 0
    while drawn < num_permutations:
        count = min(_CHUNK, num_permutations - drawn)
        extreme = statistic(_subsets(total, size, count, rng)) >= bar  # (count,)
        running = hits + np.cumsum(extreme)
        if running[-1] >= STOP_AFTER:
            stop = int(np.argmax(running >= STOP_AFTER))  # index of the deciding draw
            return STOP_AFTER / (drawn + stop + 1)
        hits, drawn = int(running[-1]), drawn + count
    return (1 + hits) / (1 + drawn)


def mmd_test(
    x: np.ndarray, y: np.ndarray, num_permutations: int, rng: np.random.Generator
) -> TestResult:
    """x: (n, d), y: (m, d). Biased (V-statistic) MMD squared with an RBF kernel of
    width sigma = the median pairwise distance of x and y pooled; permutation p-value."""
    z = np.concatenate([x, y]).astype(np.float64)  # (N, d)
    big = len(z)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)  # (N, N)
    median = float(np.median(d2[np.triu_indices(big, 1)]))
    kernel = np.exp(-d2 / (2.0 * median)) if median > 0 else np.ones_like(d2)
    # With b marking a subset T of size t (u = N - t outside), the weights are
    # w = 1/u - (1/u + 1/t) b, and w^T K w expands to three terms of which only
    # sum(K[T, T]) and sum(r[T]) (r = K 1) depend on T: O(t^2) per permutation.
    t = min(len(x), len(y))
    u = big - t
    c = 1.0 / u + 1.0 / t
    total_sum = float(kernel.sum())
    row_sums = kernel.sum(1)  # (N,)

    def statistic(subsets: np.ndarray) -> np.ndarray:  # (P, t) indices
        inner = kernel[subsets[:, :, None], subsets[:, None, :]].sum((1, 2))  # (P,)
        return total_sum / u**2 - 2.0 * c / u * row_sums[subsets].sum(1) + c * c * inner

    smaller = np.arange(len(x)) if len(x) <= len(y) else np.arange(len(x), big)
    observed = float(statistic(smaller[None, :])[0])
    p_value = _permutation_p(statistic, observed, big, t, num_permutations, rng)
    return TestResult(max(observed, 0.0), p_value, "mmd")


def ks_test(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov, two-sided (scipy's exact or asymptotic p-value)."""
    from scipy import stats  # here: importing scipy.stats costs a server ~60 MB at start

    result = stats.ks_2samp(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return TestResult(float(result.statistic), float(result.pvalue), "ks")


def _chi2(counts_t: np.ndarray, totals: np.ndarray, t: int, u: int) -> np.ndarray:
    """Chi-square of 2 x K tables given one row's counts (P, K) for a sample of size t,
    the column totals (K,) and the other sample's size u."""
    big = t + u
    expected_t = totals * (t / big)  # (K,)
    expected_u = totals * (u / big)
    counts_u = totals - counts_t
    return (((counts_t - expected_t) ** 2) / expected_t).sum(-1) + (
        ((counts_u - expected_u) ** 2) / expected_u
    ).sum(-1)


def categorical_test(
    x: Sequence[str], y: Sequence[str], num_permutations: int, rng: np.random.Generator
) -> TestResult:
    """Labels of two samples: total-variation distance and a permutation p-value on the
    chi-square statistic of the 2 x K contingency table."""
    n, m = len(x), len(y)
    categories = sorted(set(x) | set(y))
    if len(categories) < 2:
        return TestResult(0.0, 1.0, "chi2_permutation")
    index = {c: i for i, c in enumerate(categories)}
    onehot = np.eye(len(categories))[[index[c] for c in [*x, *y]]]  # (N, K)
    totals = onehot.sum(0)  # (K,), every entry > 0
    t = min(n, m)

    def statistic(subsets: np.ndarray) -> np.ndarray:  # (P, t) indices
        return _chi2(onehot[subsets].sum(1), totals, t, n + m - t)

    smaller = np.arange(n) if n <= m else np.arange(n, n + m)
    observed = float(statistic(smaller[None, :])[0])
    p_value = _permutation_p(statistic, observed, n + m, t, num_permutations, rng)
    counts_x = onehot[:n].sum(0)
    tv = 0.5 * float(np.abs(counts_x / n - (totals - counts_x) / m).sum())
    return TestResult(tv, p_value, "chi2_permutation")


def psi(reference: np.ndarray, window: np.ndarray, bins: int = 10) -> float:
    """Population stability index over `bins` quantile bins of the reference:
    sum over bins of (w - r) * ln(w / r), empty bins floored at 1e-4. The usual rule
    reads > 0.1 as a moderate and > 0.2 (or 0.25) as a major shift."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    w = np.bincount(np.searchsorted(edges, window, side="right"), minlength=len(edges) + 1)
    r = np.maximum(r / len(reference), 1e-4)
    w = np.maximum(w / len(window), 1e-4)
    return float(((w - r) * np.log(w / r)).sum())
