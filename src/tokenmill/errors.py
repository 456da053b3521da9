"""Typed errors shared by every layer.

Request errors carry a message that says what was wrong and what to change, the name
of the offending parameter where there is one, and a `code`: always a snake_case
string, as OpenAI's documented codes are (`context_length_exceeded`,
`rate_limit_exceeded`). The server turns them into OpenAI-shaped errors without
guessing. Configuration errors are their own family: they stop a process from
starting, they are not answers to a request.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting or a model file cannot be used; the message says which and why.
    `setting` names the setting at fault, where one is."""

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.message = message
        self.setting = setting


class ModelLoadError(ConfigError):
    """A model file or directory exists but cannot be served (unsupported architecture,
    inconsistent shapes, unknown RoPE kind)."""


class TokenmillError(Exception):
    """Base class of errors answered to a request. `param` names the request field at
    fault, if any; `code` defaults to the class's `default_code`."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str = "internal_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers: dict[str, str] = {}
        """Response headers the error carries (rate-limit state, Retry-After)."""


class InvalidRequestError(TokenmillError, ValueError):
    """A request parameter is out of range or inconsistent (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"


class ContextLengthError(InvalidRequestError):
    """Prompt plus requested tokens do not fit the model's context (HTTP 400)."""

    def __init__(self, message: str, param: str | None = "messages"):
        super().__init__(message, param=param, code="context_length_exceeded")


class ModelNotFoundError(TokenmillError, LookupError):
    """The named model is neither a path nor a known packaged model (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = "model"):
        super().__init__(message, param=param, code="model_not_found")


class QueueFullError(TokenmillError):
    """The engine's waiting queue is full; retry later (HTTP 429)."""

    status_code = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, retry_after_s: float = 1.0):
        super().__init__(message, code="queue_full")
        self.retry_after_s = retry_after_s


class EngineDeadError(TokenmillError):
    """The engine loop stopped after an internal failure (HTTP 503)."""

    status_code = 503
    error_type = "server_error"
    default_code = "engine_unavailable"


class RequestTimeoutError(TokenmillError):
    """The request ran past the server's per-request timeout (HTTP 408)."""

    status_code = 408
    error_type = "timeout_error"

    def __init__(self, timeout_s: float):
        super().__init__(
            f"The request did not finish within the server's request timeout of {timeout_s:g} s "
            "and was aborted. Ask for fewer tokens (max_tokens) or start the server with a "
            "larger --request-timeout.",
            code="request_timeout",
        )


class ServiceUnavailableError(TokenmillError):
    """The server cannot take requests right now: loading or shutting down (HTTP 503)."""

    status_code = 503
    error_type = "server_error"

    def __init__(self, message: str, code: str, retry_after_s: float | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s
