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

A permutation p-value is (1 + #{permuted statistic >= observed}) / (1 + permutations):
its smallest value is 1 / (1 + permutations), so use at least 20 / alpha permutations.

`psi` is the population stability index with a fixed threshold: the common practice
that the calibration benchmark shows to misfire on small windows. Nothing here uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

_CHUNK = 256
"""Permutations evaluated per matrix product (bounds memory to CHUNK x pooled size)."""


@dataclass(frozen=True)
class TestResult:
    """The outcome of one two-sample test."""

    score: float
    """The size of the difference (MMD squared, KS distance, total variation)."""
    p_value: float
    test: str
    """"mmd", "ks" or "chi2_permutation"."""

    __test__ = False  # not a pytest test class, despite the name


def _permutation_p(observed: float, permuted: np.ndarray) -> float:
    # A relative tolerance keeps float noise from turning ties into "smaller".
    extreme = np.count_nonzero(permuted >= observed - 1e-12 * max(1.0, abs(observed)))
    return float((1 + extreme) / (1 + len(permuted)))


def _assignments(n: int, total: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random permutations of the pooled indices: (count, total) bool masks,
    True where an element lands in the first sample (of size n)."""
    order = rng.permuted(np.tile(np.arange(total), (count, 1)), axis=1)
    masks = np.zeros((count, total), dtype=bool)
    np.put_along_axis(masks, order[:, :n], True, axis=1)
    return masks


def mmd_test(
    x: np.ndarray, y: np.ndarray, num_permutations: int, rng: np.random.Generator
) -> TestResult:
    """x: (n, d), y: (m, d). Biased (V-statistic) MMD squared with an RBF kernel of
    width sigma = the median pairwise distance of x and y pooled; permutation p-value."""
    n = len(x)
    z = np.concatenate([x, y]).astype(np.float64)  # (N, d)
    sq = (z * z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)  # (N, N)
    median = float(np.median(d2[np.triu_indices(len(z), 1)]))
    kernel = np.exp(-d2 / (2.0 * median)) if median > 0 else np.ones_like(d2)

    def statistic(masks: np.ndarray) -> np.ndarray:
        w = np.where(masks, 1.0 / n, -1.0 / (len(z) - n))  # (P, N)
        return ((w @ kernel) * w).sum(1)  # (P,) = w^T K w per row

    observed = float(statistic(np.arange(len(z))[None, :] < n)[0])
    permuted = np.concatenate(
        [
            statistic(_assignments(n, len(z), min(_CHUNK, num_permutations - i), rng))
            for i in range(0, num_permutations, _CHUNK)
        ]
    )
    return TestResult(max(observed, 0.0), _permutation_p(observed, permuted), "mmd")


def ks_test(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov, two-sided (scipy's exact or asymptotic p-value)."""
    result = stats.ks_2samp(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return TestResult(float(result.statistic), float(result.pvalue), "ks")


def _chi2(counts_x: np.ndarray, totals: np.ndarray, n: int, m: int) -> np.ndarray:
    """Chi-square of 2 x K tables given the first rows (P, K) and column totals (K,)."""
    big = n + m
    expected_x = totals * (n / big)  # (K,)
    expected_y = totals * (m / big)
    counts_y = totals - counts_x
    return (((counts_x - expected_x) ** 2) / expected_x).sum(-1) + (
        ((counts_y - expected_y) ** 2) / expected_y
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
    codes = np.array([index[c] for c in [*x, *y]])
    onehot = np.eye(len(categories))[codes]  # (N, K)
    totals = onehot.sum(0)  # (K,), every entry > 0
    counts_x = onehot[:n].sum(0)
    observed = float(_chi2(counts_x, totals, n, m))
    permuted = np.concatenate(
        [
            _chi2(
                _assignments(n, n + m, min(_CHUNK, num_permutations - i), rng) @ onehot,
                totals,
                n,
                m,
            )
            for i in range(0, num_permutations, _CHUNK)
        ]
    )
    tv = 0.5 * float(np.abs(counts_x / n - (totals - counts_x) / m).sum())
    return TestResult(tv, _permutation_p(observed, permuted), "chi2_permutation")


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
