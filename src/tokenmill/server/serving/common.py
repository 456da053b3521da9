"""Pieces the endpoints share: the ignored-fields header and stream error frames."""

from __future__ import annotations

import logging

from tokenmill.errors import TokenmillError
from tokenmill.server.errors import error_body, error_from_exception
from tokenmill.server.streaming import sse_frame

logger = logging.getLogger(__name__)


IGNORED_FIELDS_HEADER = "x-tokenmill-ignored-fields"


def ignored_fields_headers(names: list[str]) -> dict[str, str]:
    """The header that tells a client which of its fields were ignored."""
    return {IGNORED_FIELDS_HEADER: ",".join(names)} if names else {}


def error_frame(exc: BaseException) -> str:
    """The event that ends a stream which fails after its headers were sent; the openai
    SDK raises it as an APIError."""
    if isinstance(exc, TokenmillError):
        return sse_frame(error_from_exception(exc))
    logger.exception("stream failed", exc_info=exc)
    return sse_frame(
        error_body(
            f"Internal server error ({type(exc).__name__}); the server log has the details.",
            "server_error",
            None,
            "internal_error",
        )
    )
