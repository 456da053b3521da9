"""The drift monitor: a reference, a sliding window of live traffic, and the verdict.

Status machine (overall and per signal):
- "collecting": the reference is still being built from the first `reference_size`
  observations, or the window holds fewer than `window_size` since then;
- "ok": every tested signal's p-value is above its threshold;
- "drift": at least one is at or below it.
A signal with fewer than MIN_VALUES known values on either side (say, no logprobs were
recorded) is "unavailable" and not tested.

One check tests m signals, each at alpha / m (Bonferroni), so the chance that a check
of same-distribution traffic reports "drift" is at most alpha. Checks of overlapping
windows are not independent trials: over many checks, some false alarm eventually
happens. Act on drift that persists, or check once per `window_size` requests.

A check costs tens of milliseconds (permutation tests): run it off the event loop.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import asdict, dataclass

import numpy as np

from tokenmill.config import DriftConfig
from tokenmill.errors import ConfigError
from tokenmill.observability.drift.profile import Profile
from tokenmill.observability.drift.records import Observation
from tokenmill.observability.drift.signals import SIGNALS, SIGNALS_BY_NAME, column, run_test

log = logging.getLogger(__name__)

MIN_VALUES = 10
"""Known values a signal needs on each side to be tested."""


@dataclass(frozen=True)
class SignalReport:
    """One signal's verdict on the current window."""

    name: str
    kind: str
    """ "input" or "output"."""
    test: str
    """ "mmd", "ks" or "chi2_permutation"."""
    status: str
    """ "collecting", "unavailable", "ok" or "drift"."""
    score: float | None
    p_value: float | None
    threshold: float | None
    """The p-value at or below which this signal reports drift (alpha / m)."""
    reference_size: int
    window_size: int
    """Known values compared on each side."""


@dataclass(frozen=True)
class DriftReport:
    """The overall verdict and each signal's, as GET /v1/monitoring/drift shows them."""

    status: str
    signals: list[SignalReport]
    alpha: float
    """Family-wise false-alarm rate of this check."""
    reference_size: int
    reference_target: int
    window_size: int
    window_target: int
    observations: int
    """Observations seen since start (reference included)."""

    def to_dict(self) -> dict:
        return asdict(self)


class DriftMonitor:
    """Keeps the reference and the window; `observe` from any thread, `check` off the
    event loop. Thread-safe."""

    def __init__(
        self, config: DriftConfig, profile: Profile | None = None, encoder: str | None = None
    ) -> None:
        """profile: a loaded reference (else the first `reference_size` observations
        form it); encoder: the live embedding model's name, which must match the
        profile's. ConfigError for unknown signal names, a mismatched encoder, or
        too few permutations for the per-signal threshold."""
        names = config.signals or tuple(s.name for s in SIGNALS)
        unknown = sorted(set(names) - set(SIGNALS_BY_NAME))
        if unknown:
            raise ConfigError(f"Unknown drift signals {unknown}; known: {sorted(SIGNALS_BY_NAME)}.")
        if 1 / (1 + config.num_permutations) > config.alpha / (2 * len(names)):
            needed = int(2 * len(names) / config.alpha)
            raise ConfigError(
                f"num_permutations={config.num_permutations} cannot resolve p-values down to "
                f"the per-signal threshold alpha/m = {config.alpha / len(names):.4g}; use at "
                f"least {needed}."
            )
        if profile is not None and encoder and profile.encoder and profile.encoder != encoder:
            raise ConfigError(
                f"The drift profile's embeddings come from {profile.encoder!r} but the live "
                f"encoder is {encoder!r}; rebuild the profile with the live encoder."
            )
        self.config = config
        self.signals = [SIGNALS_BY_NAME[n] for n in names]
        self.encoder = encoder
        self._profile = profile
        self._pending: list[Observation] = []
        self._window: collections.deque[Observation] = collections.deque(maxlen=config.window_size)
        self._seen = 0
        self._rng = np.random.default_rng(config.seed)
        self._lock = threading.Lock()
        """Guards the reference, window and cache; held only briefly."""
        self._check_lock = threading.Lock()
        """Serialises checks (the generator and the warning state)."""
        self._cached: tuple[int, DriftReport] | None = None
        self._last_status: dict[str, str] = {}

    @property
    def profile(self) -> Profile | None:
        """The reference, once complete (save it to reuse after a restart)."""
        return self._profile

    def observe(self, observation: Observation) -> None:
        """Adds one request's features: to the reference while it is being built, else
        to the window (dropping the oldest when full). ConfigError, and nothing
        added, for an embedding whose size differs from the reference's."""
        with self._lock:
            if observation.embedding is not None:
                ref = self._embedding_dim()
                if ref is not None and observation.embedding.shape != (ref,):
                    raise ConfigError(
                        f"Prompt embedding of shape {observation.embedding.shape} does not match "
                        f"the drift reference's {ref} dimensions; embed with the same encoder."
                    )
            self._seen += 1
            if self._profile is None:
                self._pending.append(observation)
                if len(self._pending) >= self.config.reference_size:
                    self._profile = Profile.from_observations(self._pending, self.encoder)
                    self._pending = []
            else:
                self._window.append(observation)

    def _embedding_dim(self) -> int | None:
        """The reference's embedding size (None before any embedding); under _lock."""
        if self._profile is not None:
            vectors = self._profile.columns.get("prompt_embedding")
            return vectors.shape[1] if vectors is not None and len(vectors) else None
        first = next((o.embedding for o in self._pending if o.embedding is not None), None)
        return None if first is None else first.shape[0]

    def check(self) -> DriftReport:
        """Tests the window against the reference. Repeated checks with no new
        observation return the same report; logs a warning for each signal that has
        just crossed into drift."""
        with self._check_lock:
            with self._lock:
                if self._cached is not None and self._cached[0] == self._seen:
                    return self._cached[1]
                seen, profile, window = self._seen, self._profile, list(self._window)
                pending = len(self._pending)
            # Computed outside the data lock, so `observe` never waits for the tests.
            report = self._compute(seen, profile, pending, window)
            with self._lock:
                self._cached = (seen, report)
            for sig in report.signals:
                if sig.status == "drift" and self._last_status.get(sig.name) != "drift":
                    log.warning(
                        "drift on signal %s: score %.4g, p-value %.3g <= threshold %.3g "
                        "(window %d, reference %d)",
                        sig.name,
                        sig.score,
                        sig.p_value,
                        sig.threshold,
                        sig.window_size,
                        sig.reference_size,
                    )
                self._last_status[sig.name] = sig.status
            return report

    def _compute(
        self, seen: int, profile: Profile | None, pending: int, window: list[Observation]
    ) -> DriftReport:
        """The report for a snapshot; uses the permutation generator (under _check_lock)."""
        cfg = self.config
        ready = profile is not None and len(window) >= cfg.window_size
        ref_size = profile.size if profile is not None else pending
        ref_target = profile.size if profile is not None else cfg.reference_size
        columns = [
            (s, profile.columns.get(s.name, []) if profile else [], column(s, window))
            for s in self.signals
        ]
        testable = [c for c in columns if len(c[1]) >= MIN_VALUES and len(c[2]) >= MIN_VALUES]
        threshold = cfg.alpha / len(testable) if testable else None
        reports = []
        for signal, ref, win in columns:
            score = p_value = None
            if not ready:
                status = "collecting"
            elif len(ref) < MIN_VALUES or len(win) < MIN_VALUES:
                status = "unavailable"
            else:
                result = run_test(signal, ref, win, cfg.num_permutations, self._rng)
                score, p_value = result.score, result.p_value
                status = "drift" if p_value <= threshold else "ok"
            reports.append(
                SignalReport(
                    signal.name,
                    signal.kind,
                    _TESTS[signal.values],
                    status,
                    score,
                    p_value,
                    threshold if ready and status != "unavailable" else None,
                    len(ref),
                    len(win),
                )
            )
        if not ready:
            overall = "collecting"
        else:
            overall = "drift" if any(r.status == "drift" for r in reports) else "ok"
        return DriftReport(
            overall,
            reports,
            cfg.alpha,
            ref_size,
            ref_target,
            len(window),
            cfg.window_size,
            seen,
        )


_TESTS = {"vector": "mmd", "number": "ks", "category": "chi2_permutation"}
