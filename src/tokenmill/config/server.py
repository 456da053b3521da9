"""How the HTTP server listens and guards itself."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@dataclass(frozen=True)
class ServerConfig:
    """The HTTP layer's settings."""

    host: str = setting(
        "127.0.0.1",
        "Interface to listen on; 0.0.0.0 exposes the server to the network.",
        metavar="ADDR",
    )
    port: int = setting(8000, "TCP port to listen on.", metavar="PORT")
    request_timeout: float | None = setting(
        600.0,
        "Seconds a request may take, queueing included, before it is aborted (HTTP 408); "
        "0 or none means no limit.",
        metavar="SECONDS",
        none_words=("0", "0.0", "none", "off"),
    )
    max_body_mib: float = setting(
        8.0, "Largest request body accepted; larger ones get HTTP 413.", metavar="MIB"
    )
    shutdown_grace: float = setting(
        10.0,
        "On SIGTERM or Ctrl-C, seconds in-flight requests get to finish before they are aborted.",
        metavar="SECONDS",
    )
    log_level: str = setting("info", "Logging detail.", choices=LOG_LEVELS)
    access_log: bool = setting(True, "Log one line per HTTP request (true/false).")
    strict_fields: bool = setting(
        False,
        "Refuse request fields the API does not know (HTTP 400) instead of ignoring them; "
        "ignored fields are always named in the x-tokenmill-ignored-fields header.",
    )

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in [0, 65535], got {self.port}.", setting="port")
        if self.request_timeout is not None and self.request_timeout <= 0:
            raise ConfigError(
                f"request_timeout must be positive, got {self.request_timeout}.",
                setting="request_timeout",
            )
        if self.max_body_bytes < 1024:
            raise ConfigError(
                f"max_body_mib must be at least 1 KiB, got {self.max_body_mib}.",
                setting="max_body_mib",
            )
        if self.shutdown_grace < 0:
            raise ConfigError(
                f"shutdown_grace must be >= 0, got {self.shutdown_grace}.", setting="shutdown_grace"
            )
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level must be one of {', '.join(LOG_LEVELS)}; got {self.log_level!r}.",
                setting="log_level",
            )

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mib * 2**20)

    @property
    def base_url(self) -> str:
        """The URL OpenAI clients use as `base_url`."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"
