"""How the HTTP server listens and guards itself."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
ENGINE_FAILURE = ("restart", "exit")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


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

    header_timeout: float = setting(
        10.0,
        "Seconds a client has to send a request's line and headers, from connecting (or "
        "from its previous response); slower ones get HTTP 408 and are disconnected.",
        metavar="SECONDS",
    )
    body_timeout: float = setting(
        60.0,
        "Seconds a client has to send a request's whole body once its headers are in.",
        metavar="SECONDS",
    )
    keep_alive_timeout: float = setting(
        5.0, "Seconds an idle keep-alive connection is kept open.", metavar="SECONDS"
    )
    max_connections: int = setting(
        1000,
        "Open connections at most. Past it, the oldest connection still waiting for its "
        "request is closed to make room; if every one is busy, the newcomer gets HTTP 503.",
        metavar="N",
    )
    max_header_kib: float = setting(
        32.0,
        "Largest request line plus headers accepted; larger ones get HTTP 431.",
        metavar="KIB",
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "Host header values accepted (repeatable; * accepts any). Default: the loopback "
        "names when listening on loopback (against DNS rebinding), any otherwise.",
        metavar="HOST",
    )
    cors_origins: tuple[str, ...] = setting(
        (),
        "Browser origins allowed to call the API (CORS; repeatable, * for any). Default: "
        "none, so browsers refuse cross-origin calls.",
        metavar="ORIGIN",
    )
    docs: bool = setting(
        False,
        "Serve the interactive API docs at /docs and /redoc (they load Swagger UI and "
        "ReDoc from a CDN). /openapi.json is always served.",
    )
    engine_stall_timeout: float = setting(
        60.0,
        "GET /health answers 503 when work is waiting and the engine has not completed a "
        "step for this many seconds.",
        metavar="SECONDS",
    )
    on_engine_failure: str = setting(
        "restart",
        "When the engine thread dies: restart it (requests in flight fail with 503) or "
        "exit the process with status 3, for a supervisor to restart.",
        choices=ENGINE_FAILURE,
    )

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive.", setting=name)
        if self.engine_stall_timeout <= 0:
            raise ConfigError(
                "engine_stall_timeout must be positive.", setting="engine_stall_timeout"
            )
        if self.max_connections < 1:
            raise ConfigError("max_connections must be at least 1.", setting="max_connections")
        if self.max_header_kib < 1:
            raise ConfigError("max_header_kib must be at least 1.", setting="max_header_kib")
        if self.on_engine_failure not in ENGINE_FAILURE:
            raise ConfigError(
                f"on_engine_failure must be one of {', '.join(ENGINE_FAILURE)}.",
                setting="on_engine_failure",
            )
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
    def max_header_bytes(self) -> int:
        return int(self.max_header_kib * 1024)

    @property
    def host_patterns(self) -> tuple[str, ...]:
        """The Host names accepted: as configured, else loopback names on a loopback
        address and any ("*") otherwise."""
        if self.allowed_hosts:
            return tuple(h.lower() for h in self.allowed_hosts)
        if self.host in LOOPBACK_HOSTS or self.host.startswith("127."):
            return (*LOOPBACK_HOSTS, self.host)
        return ("*",)

    @property
    def base_url(self) -> str:
        """The URL OpenAI clients use as `base_url`."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/v1"
