"""Pieces the endpoints share: the ignored-fields header and stream error frames."""

from __future__ import annotations

import logging
from urllib.parse import quote

from tokenmill.errors import TokenmillError
from tokenmill.server.errors import error_body, error_from_exception
from tokenmill.server.streaming import sse_frame

logger = logging.getLogger(__name__)


IGNORED_FIELDS_HEADER = "x-tokenmill-ignored-fields"


def ignored_fields_headers(names: list[str]) -> dict[str, str]:
    """The header that tells a client which of its fields were ignored. Names are
    percent-encoded (a header is Latin-1, a JSON key any Unicode) and at most 1 KiB of
    them is listed."""
    if not names:
        return {}
    value = ",".join(quote(n, safe="._-[]", errors="backslashreplace") for n in names)
    if len(value) > 1024:
        value = value[:1024].rsplit(",", 1)[0] + ",..."
    return {IGNORED_FIELDS_HEADER: value}


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
