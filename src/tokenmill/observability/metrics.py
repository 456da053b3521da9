"""Prometheus metrics under vLLM's names with the `tokenmill:` prefix.

Every series carries `model_name`. The names dashboards query are stable: `/metrics`
always answers in the classic text format (0.0.4), which keeps the `tokenmill:` colon;
prometheus-client's OpenMetrics writer would rewrite it to `tokenmill_`, and a real
Prometheus accepts the text format whatever it lists first in its Accept header.

Request-level series (tokens, latencies, finish reasons, gateway decisions) are
observed once per call by the gateway's metrics policy. Engine-level series (running,
waiting, KV use, prefix cache, preemptions) are read from `EngineClient.stats()` when
Prometheus scrapes, so the engine loop pays nothing for them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

PREFIX = "tokenmill:"
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0,
)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000)


@dataclasses.dataclass(frozen=True)
class CallObservation:
    """What one finished call contributes to the request-level series."""

    model_name: str
    prompt_tokens: int
    generation_tokens: int
    finish_reasons: list[str]
    e2e_s: float
    ttft_s: float | None
    itl_s: float | None
    """The call's mean gap between output tokens after the first."""
    queue_times_s: list[float]


class Metrics:
    """The registry and its instruments. Observing mutates only the instruments."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, object]]] | None = None):
        """`engines()` lists (model_name, stats dataclass) pairs at scrape time."""
        self.registry = CollectorRegistry(auto_describe=True)
        r, m = self.registry, ["model_name"]
        self.prompt_tokens = Counter(
            PREFIX + "prompt_tokens", "Prompt tokens of finished calls.", m, registry=r
        )
        self.generation_tokens = Counter(
            PREFIX + "generation_tokens", "Generated tokens of finished calls.", m, registry=r
        )
        self.request_success = Counter(
            PREFIX + "request_success",
            "Finished choices by finish reason (stop, length, abort).",
            [*m, "finished_reason"],
            registry=r,
        )
        self.request_failure = Counter(
            PREFIX + "request_failure",
            "Calls that ended in an error, by the error's code.",
            [*m, "code"],
            registry=r,
        )
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "From the call's arrival to its first output.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            PREFIX + "inter_token_latency_seconds",
            "Each call's mean gap between output tokens after the first.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            PREFIX + "e2e_request_latency_seconds",
            "From the call's arrival to its end.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            PREFIX + "request_queue_time_seconds",
            "Time an engine request waited before its first scheduled step.",
            m,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_prompt_tokens = Histogram(
            PREFIX + "request_prompt_tokens",
            "Prompt tokens per call.",
            m,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.request_generation_tokens = Histogram(
            PREFIX + "request_generation_tokens",
            "Generated tokens per call.",
            m,
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.http_requests = Counter(
            PREFIX + "http_requests",
            "HTTP responses by route template and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.response_cache = Counter(
            PREFIX + "response_cache_lookups",
            "Response cache lookups by result (hit, miss, bypass) and kind (exact, semantic).",
            [*m, "result", "kind"],
            registry=r,
        )
        self.guardrail_decisions = Counter(
            PREFIX + "guardrail_decisions",
            "Guardrail decisions by policy (injection, pii, pii_output) and action.",
            [*m, "policy", "action"],
            registry=r,
        )
        self.rate_limited = Counter(
            PREFIX + "rate_limited_requests",
            "Calls refused by a rate limit, by API key name.",
            [*m, "key_name"],
            registry=r,
        )
        self.feedback = Counter(
            PREFIX + "feedback_ratings",
            "Feedback ratings received, by the rated call's model version and rating.",
            [*m, "model_version", "rating"],
            registry=r,
        )
        self.drift_score = Gauge(
            PREFIX + "drift_score",
            "Each drift signal's latest statistic (see GET /v1/monitoring/drift).",
            [*m, "signal"],
            registry=r,
        )
        self.drift_alarm = Gauge(
            PREFIX + "drift_detected",
            "1 while a drift signal is past its threshold, else 0.",
            [*m, "signal"],
            registry=r,
        )
        if engines is not None:
            self.watch_engines(engines)

    def watch_engines(self, engines: Callable[[], Iterable[tuple[str, object]]]) -> None:
        """Exports the engine series of what `engines()` lists at each scrape."""
        self.registry.register(EngineCollector(engines))

    def watch_shadows(self, shadows: Callable[[], Iterable[tuple[str, object]]]) -> None:
        """Exports the comparison counts of each shadow version `shadows()` lists as
        (NAME@VERSION, stats with compared, greedy_compared, exact_matches,
        length_ratio_sum and failures) at each scrape."""
        self.registry.register(ShadowCollector(shadows))

    def observe_call(self, obs: CallObservation) -> None:
        """Adds one finished call to the request-level series."""
        name = obs.model_name
        self.prompt_tokens.labels(name).inc(obs.prompt_tokens)
        self.generation_tokens.labels(name).inc(obs.generation_tokens)
        for reason in obs.finish_reasons:
            self.request_success.labels(name, reason).inc()
        self.e2e.labels(name).observe(obs.e2e_s)
        if obs.ttft_s is not None:
            self.ttft.labels(name).observe(obs.ttft_s)
        if obs.itl_s is not None:
            self.itl.labels(name).observe(obs.itl_s)
        for q in obs.queue_times_s:
            self.queue_time.labels(name).observe(q)
        self.request_prompt_tokens.labels(name).observe(obs.prompt_tokens)
        self.request_generation_tokens.labels(name).observe(obs.generation_tokens)

    def render(self) -> bytes:
        """The exposition in the classic text format (CONTENT_TYPE)."""
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Engine gauges and counters, read from each engine's stats when scraped."""

    def __init__(self, engines: Callable[[], Iterable[tuple[str, object]]]):
        self.engines = engines

    def describe(self):
        return []

    def collect(self):
        m = ["model_name"]
        running = GaugeMetricFamily(PREFIX + "num_requests_running", "Requests running.", labels=m)
        waiting = GaugeMetricFamily(PREFIX + "num_requests_waiting", "Requests waiting.", labels=m)
        kv = GaugeMetricFamily(
            PREFIX + "kv_cache_usage_perc", "KV cache blocks in use, 0 to 1.", labels=m
        )
        queries = CounterMetricFamily(
            PREFIX + "prefix_cache_queries", "Prefix cache lookups (tokens).", labels=m
        )
        hits = CounterMetricFamily(
            PREFIX + "prefix_cache_hits", "Prefix cache hits (tokens).", labels=m
        )
        preemptions = CounterMetricFamily(
            PREFIX + "num_preemptions", "Requests preempted to free KV blocks.", labels=m
        )
        drafts = CounterMetricFamily(
            PREFIX + "spec_decode_num_draft_tokens",
            "Speculative draft tokens verified.",
            labels=m,
        )
        accepted = CounterMetricFamily(
            PREFIX + "spec_decode_num_accepted_tokens",
            "Speculative draft tokens the model accepted.",
            labels=m,
        )
        acceptance = GaugeMetricFamily(
            PREFIX + "spec_decode_acceptance_rate",
            "Accepted / verified draft tokens since start (0 before any draft).",
            labels=m,
        )
        per_step = GaugeMetricFamily(
            PREFIX + "tokens_per_sequence_step",
            "Generated tokens per sequence per engine step since start (1 without speculation).",
            labels=m,
        )
        for name, stats in self.engines():
            drafts.add_metric([name], getattr(stats, "spec_draft_tokens", 0))
            accepted.add_metric([name], getattr(stats, "spec_accepted_tokens", 0))
            acceptance.add_metric([name], getattr(stats, "spec_acceptance_rate", None) or 0.0)
            per_step.add_metric([name], getattr(stats, "tokens_per_sequence_step", None) or 0.0)
            running.add_metric([name], getattr(stats, "num_running", 0))
            waiting.add_metric([name], getattr(stats, "num_waiting", 0))
            total = getattr(stats, "kv_blocks_total", 0)
            used = getattr(stats, "kv_blocks_used", 0)
            kv.add_metric([name], used / total if total else 0.0)
            queries.add_metric([name], getattr(stats, "prefix_cache_queries", 0))
            hits.add_metric([name], getattr(stats, "prefix_cache_hits", 0))
            preemptions.add_metric([name], getattr(stats, "num_preemptions", 0))
        yield from (running, waiting, kv, queries, hits, preemptions)
        yield from (drafts, accepted, acceptance, per_step)


class ShadowCollector(Collector):
    """Shadow versions' running comparison with the live answers, read when scraped.
    exact_matches / greedy_compared is the greedy exact-match rate, length_ratio_sum /
    compared the mean shadow/live length ratio, as /v1/models reports them."""

    FIELDS = (
        ("compared", "Live calls whose answer the shadow version also produced."),
        ("greedy_compared", "Compared calls that were greedy (temperature 0)."),
        ("exact_matches", "Greedy compared calls whose shadow answer equalled the live one."),
        ("length_ratio_sum", "Sum over compared calls of shadow/live output length."),
        ("failures", "Shadow calls that failed (never seen by clients)."),
    )

    def __init__(self, shadows: Callable[[], Iterable[tuple[str, object]]]):
        self.shadows = shadows

    def describe(self):
        return []

    def collect(self):
        families = {
            field: CounterMetricFamily(PREFIX + "shadow_" + field, doc, labels=["model_name"])
            for field, doc in self.FIELDS
        }
        for name, stats in self.shadows():
            for field, family in families.items():
                family.add_metric([name], getattr(stats, field))
        yield from families.values()
