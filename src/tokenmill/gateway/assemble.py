"""Building the pipeline a server (or a batch runner, a Kafka worker) runs, from settings.

Policy order matters and is fixed here: model access first (a key's rights), then the
input guardrails (injection on the original text, then PII redaction), then rate
limits (they count the prompt as the model will see it), then the response cache (a
hit skips the model but still counts against the limits), then the audit log.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenmill.config import AppConfig
from tokenmill.errors import ConfigError
from tokenmill.gateway.auth import ModelAccessPolicy
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.buckets import MemoryBuckets, RedisBuckets
from tokenmill.gateway.cache_store import CacheLimits, MemoryCacheStore, RedisCacheStore
from tokenmill.gateway.engine_client import EngineClient
from tokenmill.gateway.fallback import FallbackBackend, ModelTarget
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.gateway.policy import Policy
from tokenmill.gateway.remote import RemoteBackend
from tokenmill.gateway.response_cache import ResponseCachePolicy
from tokenmill.gateway.router import SingleModelRouter


class ServiceEmbedder:
    """The semantic cache's embedder: the sentence encoder's service, batched with any
    other caller of it. Prompts longer than the encoder's 256 word pieces are embedded
    by their beginning (`truncate=True`): a cache key may be approximate, an answer
    is never truncated."""

    def __init__(self, service):
        self.service = service

    async def embed_texts(self, texts: list[str]):
        return (await self.service.embed(texts, truncate=True)).vectors


def semantic_embedder(config: AppConfig) -> ServiceEmbedder | None:
    """The encoder service when the semantic cache is on (loaded now, ~1 s), else None."""
    if config.gateway.response_cache != "semantic":
        return None
    from tokenmill.engine.embedding import EmbeddingService

    service = EmbeddingService.from_config(config.embedding)
    service.start()
    return ServiceEmbedder(service)


def redis_client(url: str | None):
    """An asyncio Redis client for `url`, or None."""
    if not url:
        return None
    try:
        import redis.asyncio as redis
    except ImportError as exc:  # pragma: no cover - redis is a dependency
        raise ConfigError("--redis-url needs the redis package", "redis_url") from exc
    return redis.from_url(url)


def guard_policies(config: AppConfig) -> list[Policy]:
    """The guardrails the settings turn on, their models loaded (a second or two) so
    the first request does not pay for it."""
    modes = config.gateway.guard_modes()
    policies: list[Policy] = []
    if modes["injection"] != "off":
        from tokenmill.gateway.guard_injection import InjectionPolicy
        from tokenmill.gateway.guardrails import InjectionConfig, shared_injection_classifier

        classifier = shared_injection_classifier(
            InjectionConfig(threshold=config.gateway.injection_threshold)
        )
        classifier.load()
        policies.append(InjectionPolicy(classifier, modes["injection"]))
    if modes["pii"] != "off":
        from tokenmill.gateway.guard_pii import PiiPolicy
        from tokenmill.gateway.guardrails import PiiConfig, shared_pii_detector

        detector = shared_pii_detector(PiiConfig(backend=config.gateway.pii_backend))
        detector.load()
        policies.append(PiiPolicy(detector, modes["pii"]))
    return policies


def build_policies(
    config: AppConfig, redis=None, embedder=None, observers: Sequence[Policy] = ()
) -> list[Policy]:
    """The policies the settings turn on, in the order they must run; `observers`
    (metrics, drift) come first, so they see every call however it ends."""
    gw = config.gateway
    policies: list[Policy] = [*observers, ModelAccessPolicy(), *guard_policies(config)]
    buckets = RedisBuckets(redis) if redis is not None else MemoryBuckets()
    from tokenmill.gateway.rate_limit import RateLimitPolicy

    policies.append(RateLimitPolicy(buckets, config.engine.model.default_max_tokens))
    if gw.response_cache != "off":
        limits = CacheLimits(gw.cache_max_entries, int(gw.cache_max_mib * 2**20), gw.cache_ttl)
        store = RedisCacheStore(redis, limits) if redis is not None else MemoryCacheStore(limits)
        semantic = gw.response_cache == "semantic"
        if semantic and embedder is None:
            raise ConfigError(
                "--response-cache semantic needs the sentence encoder", "response_cache"
            )
        policies.append(
            ResponseCachePolicy(store, embedder if semantic else None, gw.semantic_threshold)
        )
    if gw.audit_log:
        from tokenmill.gateway.audit import AuditLog

        policies.append(AuditLog(gw.audit_log, gw.log_prompts))
    return policies


def build_pipeline(
    engine: EngineClient,
    config: AppConfig,
    redis=None,
    embedder=None,
    observers: Sequence[Policy] = (),
    tracer=None,
) -> Pipeline:
    """The pipeline over one local engine, with the configured fallbacks and policies."""
    gw = config.gateway
    backend = LocalBackend(engine, timeout_s=config.server.request_timeout)
    router = SingleModelRouter(engine.model_name, backend)
    if gw.fallback:
        targets = [
            RemoteBackend(t, timeout_s=config.server.request_timeout)
            if t.startswith(("http://", "https://"))
            else ModelTarget(router, t)
            for t in gw.fallback
        ]
        chained = FallbackBackend(backend, targets, gw.breaker_failures, gw.breaker_cooldown)
        router = SingleModelRouter(engine.model_name, chained)
    return Pipeline(router, build_policies(config, redis, embedder, observers), tracer)


def build_registry_pipeline(
    registry,
    config: AppConfig,
    redis=None,
    embedder=None,
    observers: Sequence[Policy] = (),
    tracer=None,
) -> Pipeline:
    """The pipeline over a model registry (--models): the version policy first (it
    gives each call's in-flight count back to its version), then the usual policies,
    then shadow traffic (it replays finished calls on a shadow version).
    Fallback targets are not chained under --models (versions replace them)."""
    from tokenmill.gateway.shadow import ShadowPolicy
    from tokenmill.gateway.versions import VersionPolicy

    if config.gateway.fallback:
        raise ConfigError("--fallback is not supported with --models yet.", "fallback")
    policies = [VersionPolicy(registry), *build_policies(config, redis, embedder, observers)]
    policies.append(ShadowPolicy(registry, config.registry.shadow_sample))
    return Pipeline(registry, policies, tracer)
