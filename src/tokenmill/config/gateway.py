"""The gateway's settings: keys, limits, the response cache, guardrails, fallbacks, audit."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

CACHE_MODES = ("exact", "semantic", "off")
GUARDS = {"pii": ("off", "flag", "redact", "block"), "injection": ("off", "flag", "block")}


@dataclass(frozen=True)
class GatewayConfig:
    """What stands between a caller and the model."""

    api_key: tuple[str, ...] = setting(
        (),
        "An admin API key clients must send as `Authorization: Bearer KEY` or `x-api-key` "
        "(repeatable; the environment variable takes a comma-separated list). With any key "
        "set, every endpoint but /health and /ready needs one.",
        metavar="KEY",
        secret=True,
    )
    keys: str | None = setting(
        None,
        "A TOML file of named keys, one [keys.NAME] table each with key (or sha256), and "
        "optional rpm, tpm, models and admin (see the README's example).",
        metavar="FILE",
    )
    redis_url: str | None = setting(
        None,
        "Keep rate-limit counters and the response cache in Redis (redis://host:port/db), "
        "so that several tokenmill processes share them. Default: in this process.",
        metavar="URL",
    )
    response_cache: str = setting(
        "exact",
        "Answer repeated deterministic requests (temperature 0 or a fixed seed) from a "
        "cache: exact keys, or semantic (prompt embeddings within --semantic-threshold).",
        choices=CACHE_MODES,
    )
    semantic_threshold: float = setting(
        0.95,
        "Cosine similarity at which the semantic cache treats two prompts as one.",
        metavar="COSINE",
    )
    cache_max_entries: int = setting(
        10_000, "Response cache bound: entries (least recently used are evicted).", metavar="N"
    )
    cache_max_mib: float = setting(
        64.0, "Response cache bound: total size of the stored answers.", metavar="MIB"
    )
    cache_ttl: float = setting(3600.0, "Seconds a cached answer stays valid.", metavar="SECONDS")
    guard: tuple[str, ...] = setting(
        (),
        "Guardrails as NAME=MODE (repeatable): pii=off|flag|redact|block detects emails, "
        "phone numbers, cards, IBANs, IP addresses and names in input and output; "
        "injection=off|flag|block scores user messages with a prompt-injection classifier.",
        metavar="NAME=MODE",
    )
    pii_backend: str = setting(
        "rampart",
        "The PII detector: rampart (an ONNX NER model plus checksum patterns; the better "
        "on the labelled set) or presidio (Presidio with spaCy's small English model).",
        choices=("rampart", "presidio"),
    )
    injection_threshold: float = setting(
        0.5,
        "Injection classifier score at or above which a message counts as an injection.",
        metavar="SCORE",
    )
    fallback: tuple[str, ...] = setting(
        (),
        "Where to retry a request the model cannot take (queue full, failure, timeout), in "
        "order (repeatable): another served model's name, or the base URL of an "
        "OpenAI-compatible server (http://host:port/v1).",
        metavar="TARGET",
    )
    breaker_failures: int = setting(
        3,
        "Consecutive failures after which a fallback target is skipped for a cool-down.",
        metavar="N",
    )
    breaker_cooldown: float = setting(
        30.0, "Seconds a failing fallback target is skipped.", metavar="SECONDS"
    )
    log_prompts: bool = setting(
        False, "Allow prompt and output text in logs and the audit log (off: never logged)."
    )
    audit_log: str | None = setting(
        None,
        "Append one JSON line per request to this file: time, request id, key name, model, "
        "status, tokens, latency, cache and guardrail decisions.",
        metavar="FILE",
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.semantic_threshold <= 1.0:
            raise ConfigError("semantic_threshold must be in (0, 1].", setting="semantic_threshold")
        for name in ("cache_max_entries", "breaker_failures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1.", setting=name)
        for name in ("cache_max_mib", "cache_ttl", "breaker_cooldown"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive.", setting=name)
        self.guard_modes()  # validates

    def guard_modes(self) -> dict[str, str]:
        """{"pii": mode, "injection": mode}, "off" for those not given."""
        modes = dict.fromkeys(GUARDS, "off")
        for item in self.guard:
            name, _, mode = item.partition("=")
            name, mode = name.strip().lower(), mode.strip().lower()
            if name not in GUARDS or mode not in GUARDS[name]:
                allowed = "; ".join(f"{n}={'|'.join(m)}" for n, m in GUARDS.items())
                raise ConfigError(f"guard {item!r} is not valid; use {allowed}.", setting="guard")
            modes[name] = mode
        return modes
