"""The drift signals: which feature each compares, and with which two-sample test."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tokenmill.observability.drift.records import Observation
from tokenmill.observability.drift.two_sample import (
    TestResult,
    categorical_test,
    ks_test,
    mmd_test,
)


@dataclass(frozen=True)
class Signal:
    """One monitored quantity."""

    name: str
    kind: str
    """ "input" (the prompt) or "output" (the answer)."""
    values: str
    """ "vector", "number" or "category": how its column is stored and tested."""
    feature: Callable[[Observation], object]
    """The observation's value, or None when unknown."""
    description: str


SIGNALS: tuple[Signal, ...] = (
    Signal(
        "prompt_embedding",
        "input",
        "vector",
        lambda o: o.embedding,
        "MMD between prompt embeddings (all-MiniLM-L6-v2), permutation p-value",
    ),
    Signal(
        "prompt_length",
        "input",
        "number",
        lambda o: o.prompt_chars,
        "KS test on prompt length in characters",
    ),
    Signal(
        "prompt_script",
        "input",
        "category",
        lambda o: o.script,
        "permutation chi-square on the prompt's script or language",
    ),
    Signal(
        "output_length",
        "output",
        "number",
        lambda o: o.output_tokens,
        "KS test on output length in tokens",
    ),
    Signal(
        "finish_reason",
        "output",
        "category",
        lambda o: o.finish_reason,
        "permutation chi-square on finish reasons",
    ),
    Signal(
        "answer_kind",
        "output",
        "category",
        lambda o: o.answer_kind,
        "permutation chi-square on answered / empty / refused",
    ),
    Signal(
        "mean_logprob",
        "output",
        "number",
        lambda o: o.mean_logprob,
        "KS test on the mean token logprob",
    ),
)
SIGNALS_BY_NAME = {s.name: s for s in SIGNALS}

Column = np.ndarray | list[str]
"""A signal's values over a sample: (n, dim) float32 vectors, (n,) float64 numbers, or
a list of labels. Observations whose feature is None are left out."""


def column(signal: Signal, observations: Sequence[Observation]) -> Column:
    """The signal's known values over `observations`, in order."""
    values = [v for v in map(signal.feature, observations) if v is not None]
    if signal.values == "vector":
        return np.stack(values).astype(np.float32) if values else np.empty((0, 0), np.float32)
    if signal.values == "number":
        return np.asarray(values, dtype=np.float64)
    return [str(v) for v in values]


def run_test(
    signal: Signal,
    reference: Column,
    window: Column,
    num_permutations: int,
    rng: np.random.Generator,
) -> TestResult:
    """The signal's two-sample test of `window` against `reference`."""
    if signal.values == "vector":
        return mmd_test(reference, window, num_permutations, rng)
    if signal.values == "number":
        return ks_test(reference, window)
    return categorical_test(reference, window, num_permutations, rng)
