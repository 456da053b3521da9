"""Drift detection's settings: the reference, the live window, the tests' error budget."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

MIN_DRIFT_WINDOW = 40
"""The smallest live window whose false-alarm rate the calibration benchmark checks."""


@dataclass(frozen=True)
class DriftConfig:
    """How live traffic is compared with the reference."""

    reference_size: int = setting(
        200,
        "Requests that form the drift reference when no profile file is given.",
        name="drift_reference",
        metavar="N",
    )
    window_size: int = setting(
        100,
        f"Live requests compared with the reference (a sliding window; at least "
        f"{MIN_DRIFT_WINDOW}).",
        name="drift_window",
        metavar="N",
    )
    alpha: float = setting(
        0.05,
        "False-alarm rate of one drift check over all signals together: each of the m "
        "signals is tested at alpha / m (Bonferroni).",
        name="drift_alpha",
    )
    num_permutations: int = setting(
        1000,
        "Permutations per permutation test (at most; unremarkable windows stop early).",
        name="drift_permutations",
        hidden=True,
    )
    seed: int | None = setting(
        None, "Seeds the permutations (tests, benchmarks).", name="drift_seed", hidden=True
    )
    signals: tuple[str, ...] | None = setting(
        None, "Signal names to test; default all.", name="drift_signals", hidden=True
    )

    def __post_init__(self) -> None:
        if self.window_size < MIN_DRIFT_WINDOW:
            raise ConfigError(
                f"drift window must be at least {MIN_DRIFT_WINDOW}, got {self.window_size}.",
                setting="drift_window",
            )
        if self.reference_size < MIN_DRIFT_WINDOW:
            raise ConfigError(
                f"drift reference must be at least {MIN_DRIFT_WINDOW}, got {self.reference_size}.",
                setting="drift_reference",
            )
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(
                f"drift alpha must be in (0, 0.5), got {self.alpha}.", setting="drift_alpha"
            )
        if self.num_permutations < 1:
            raise ConfigError(
                "drift permutations must be at least 1.", setting="drift_permutations"
            )
