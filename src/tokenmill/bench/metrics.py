"""Serving metrics: per-request timings in, the figures the field reports out.

The definitions follow vLLM's `bench serve` so figures are comparable across tools:

- TTFT: from sending the request to the first streamed token.
- ITL: gaps between successive streamed chunks that carry tokens.
- TPOT: (E2E - TTFT) / (output tokens - 1), per request with more than one token.
- E2E: from sending the request to the last byte of the stream.
- Throughputs divide totals over successful requests by the run's wall time.
- Goodput: successful requests that met every stated SLO, per second of wall time.

Percentiles use linear interpolation between closest ranks (numpy's default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    """What one request did, as the client saw it. Times are seconds."""

    success: bool
    prompt_tokens: int
    """Prompt length: the server's `usage.prompt_tokens` when it sent one, else the workload's."""
    output_tokens: int = 0
    """The server's `usage.completion_tokens` when it sent one, else token chunks counted."""
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    """Gaps between successive token-carrying chunks (len = chunks - 1)."""
    error: str = ""
    """Why it failed, as the server or transport said; empty on success."""

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first; None with fewer than two tokens."""
        if self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True)
class SLO:
    """Service-level objectives for goodput; None means "not constrained". Milliseconds."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def __post_init__(self) -> None:
        for name in ("ttft_ms", "tpot_ms", "e2e_ms"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"SLO {name} must be positive, got {value}.")

    @property
    def is_set(self) -> bool:
        """Whether any objective is stated (goodput is reported only then)."""
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))

    def is_met(self, result: RequestResult) -> bool:
        """Whether a successful request met every stated objective."""
        if not result.success:
            return False
        if self.ttft_ms is not None and result.ttft * 1000.0 > self.ttft_ms:
            return False
        tpot = result.tpot
        if self.tpot_ms is not None and tpot is not None and tpot * 1000.0 > self.tpot_ms:
            return False
        return self.e2e_ms is None or result.e2e * 1000.0 <= self.e2e_ms


@dataclass(frozen=True)
class LatencyStats:
    """Mean and percentiles of one latency, in milliseconds; all zero when no samples."""

    mean: float
    p50: float
    p90: float
    p99: float
    count: int

    @classmethod
    def of_seconds(cls, samples: list[float]) -> LatencyStats:
        """Summarize samples given in seconds."""
        if not samples:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        ms = np.asarray(samples, dtype=np.float64) * 1000.0
        p50, p90, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
        return cls(float(ms.mean()), p50, p90, p99, len(samples))


@dataclass(frozen=True)
class BenchmarkMetrics:
    """The summary of one load level (one concurrency or one request rate)."""

    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    """Successful requests per second."""
    output_throughput: float
    """Output tokens per second over successful requests."""
    total_token_throughput: float
    """Prompt plus output tokens per second over successful requests."""
    goodput: float | None
    """Requests per second that met the SLOs; None when no SLO was stated."""
    ttft: LatencyStats
    tpot: LatencyStats
    itl: LatencyStats
    e2e: LatencyStats
    errors: list[str] = field(default_factory=list)
    """Distinct failure messages (at most a few), so a failed run says why."""

    def to_dict(self) -> dict:
        """A JSON-ready dict (latencies nested as {mean, p50, p90, p99, count})."""
        return asdict(self)


MAX_DISTINCT_ERRORS = 5


def summarize(results: list[RequestResult], duration_s: float, slo: SLO) -> BenchmarkMetrics:
    """Reduce one level's request results to its metrics. Does not modify `results`."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}.")
    ok = [r for r in results if r.success]
    failed = [r for r in results if not r.success]
    errors: list[str] = []
    for r in failed:
        if r.error not in errors and len(errors) < MAX_DISTINCT_ERRORS:
            errors.append(r.error)
    input_tokens = sum(r.prompt_tokens for r in ok)
    output_tokens = sum(r.output_tokens for r in ok)
    tpots = [t for t in (r.tpot for r in ok) if t is not None]
    itls = [gap for r in ok for gap in r.itl]
    good = sum(1 for r in ok if slo.is_met(r)) if slo.is_set else None
    return BenchmarkMetrics(
        completed=len(ok),
        failed=len(failed),
        duration_s=duration_s,
        total_input_tokens=input_tokens,
        total_output_tokens=output_tokens,
        request_throughput=len(ok) / duration_s,
        output_throughput=output_tokens / duration_s,
        total_token_throughput=(input_tokens + output_tokens) / duration_s,
        goodput=None if good is None else good / duration_s,
        ttft=LatencyStats.of_seconds([r.ttft for r in ok]),
        tpot=LatencyStats.of_seconds(tpots),
        itl=LatencyStats.of_seconds(itls),
        e2e=LatencyStats.of_seconds([r.e2e for r in ok]),
        errors=errors,
    )
