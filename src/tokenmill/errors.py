"""Typed errors shared by every layer.

Each carries a message that says what was wrong and what to change, and the name of
the offending parameter where there is one, so the server can turn it into an
OpenAI-shaped error without guessing.
"""

from __future__ import annotations


class TokenmillError(Exception):
    """Base class. `param` names the request field at fault, if any."""

    status_code: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class InvalidRequestError(TokenmillError, ValueError):
    """A request parameter is out of range or inconsistent (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"


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
