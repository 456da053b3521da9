"""Pieces both generation endpoints share: usage accounting and stream error frames."""

from __future__ import annotations

import logging

from tokenmill.engine.outputs import RequestOutput
from tokenmill.errors import TokenmillError
from tokenmill.protocol.common import PromptTokensDetails, UsageInfo
from tokenmill.server.errors import error_body, error_from_exception
from tokenmill.server.streaming import sse_frame

logger = logging.getLogger(__name__)


def usage_for(outputs: list[RequestOutput | None]) -> UsageInfo:
    """Token counts over every prompt of a request and all `n` completions of each."""
    prompt = completion = cached = 0
    for out in outputs:
        if out is None:
            continue
        prompt += len(out.prompt_token_ids)
        cached += out.num_cached_tokens
        completion += sum(len(c.token_ids) for c in out.outputs)
    return UsageInfo(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


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
