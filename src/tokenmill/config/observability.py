"""How the server lets itself be watched: metrics, logs, tracing, feedback, drift."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class ObservabilityConfig:
    """Metrics, log format, OTLP tracing and the feedback store."""

    metrics: bool = setting(
        True, "Serve Prometheus metrics at GET /metrics (true/false).", name="metrics"
    )
    log_format: str = setting(
        "text",
        "Log lines as text or as one JSON object per line; both carry the request id.",
        choices=LOG_FORMATS,
    )
    otlp_endpoint: str | None = setting(
        None,
        "Export OpenTelemetry traces over OTLP/HTTP to this URL (e.g. "
        "http://collector:4318/v1/traces). Default: tracing off, at no cost.",
        metavar="URL",
        none_words=("none", "off", ""),
    )
    feedback_db: str | None = setting(
        None,
        "SQLite file that stores POST /v1/feedback ratings; default: feedback is off (404).",
        metavar="FILE",
        none_words=("none", "off", ""),
    )
    drift: bool = setting(
        False,
        "Watch live traffic for drift against a reference (GET /v1/monitoring/drift); "
        "embeds prompts with the sentence encoder off the request path.",
        name="drift",
    )
    drift_profile: str | None = setting(
        None,
        "A reference profile made by `tokenmill drift profile`; without it the first "
        "--drift-reference requests form the reference.",
        metavar="FILE",
        none_words=("none", "off", ""),
    )

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log_format must be one of {', '.join(LOG_FORMATS)}; got {self.log_format!r}.",
                setting="log_format",
            )
        endpoint = self.otlp_endpoint
        if endpoint is not None and not endpoint.startswith(("http://", "https://")):
            raise ConfigError(
                f"otlp_endpoint must be an http:// or https:// URL, got {endpoint!r}.",
                setting="otlp_endpoint",
            )
