"""How the HTTP server listens and guards itself; the engine's settings live in EngineConfig."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.errors import InvalidRequestError


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP layer's settings. The CLI fills it once, from flags, environment and file."""

    host: str = "127.0.0.1"
    """Interface to bind; 0.0.0.0 exposes the server to the network."""
    port: int = 8000
    """TCP port to listen on."""
    served_model_name: str | None = None
    """The name clients pass as `model`; None uses the engine's model name."""
    request_timeout_s: float | None = 600.0
    """Longest a request may take, queueing included; None means no limit."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Larger request bodies are refused with 413 before they are parsed."""
    shutdown_grace_s: float = 10.0
    """On SIGTERM, in-flight requests get this long to finish before they are aborted."""
    log_level: str = "info"
    """Python logging level for tokenmill and uvicorn."""
    access_log: bool = True
    """Log one line per HTTP request."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidRequestError(f"port must be in [0, 65535], got {self.port}.")
        if self.request_timeout_s is not None and self.request_timeout_s <= 0:
            raise InvalidRequestError(
                f"request_timeout must be positive, got {self.request_timeout_s}."
            )
        if self.max_body_bytes < 1024:
            raise InvalidRequestError(
                f"max_body_bytes must be at least 1024, got {self.max_body_bytes}."
            )
        if self.shutdown_grace_s < 0:
            raise InvalidRequestError(f"shutdown_grace must be >= 0, got {self.shutdown_grace_s}.")
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
            raise InvalidRequestError(
                "log_level must be one of critical, error, warning, info, debug; "
                f"got {self.log_level!r}."
            )

    @property
    def base_url(self) -> str:
        """The URL OpenAI clients use as `base_url`."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"
