"""One request line through the gateway pipeline, to its result line.

The same path for the Batch API, `tokenmill batch` and the Kafka worker: the line's body
becomes a `Call` (with the batch's caller and priority), the pipeline runs it with every
policy, and the formats turn its result into the endpoint's JSON. What the request
itself got wrong becomes an error result; what only stopped it this time (a full queue,
a rate limit, a drain) raises LineInterrupted so the caller can run it again.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from tokenmill.batch.lines import (
    RequestLine,
    internal_error_record,
    response_error_record,
    success_record,
    validate_body,
)
from tokenmill.errors import TokenmillError
from tokenmill.gateway.call import Call, Caller, Usage
from tokenmill.gateway.formats.chat import chat_response
from tokenmill.gateway.formats.completion import completion_response
from tokenmill.gateway.pipeline import Pipeline

logger = logging.getLogger(__name__)
# Answers that say "not now" rather than "not this request": 429 (queue full, rate limit)
# and 503 (loading, draining, engine gone).
RETRYABLE_STATUS = frozenset({429, 503})


class LineInterrupted(Exception):
    """The line did not finish for a reason of the server's, not the request's; run it
    again (after `retry_after_s`, when given). Nothing was recorded for it."""

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class LineResult:
    """What a line ended as: its result line, whether it succeeded, and its tokens."""

    record: dict[str, Any]
    ok: bool
    usage: Usage = field(default_factory=Usage)

    @property
    def status_code(self) -> int | None:
        response = self.record.get("response")
        return response["status_code"] if response else None


async def execute_line(
    pipeline: Pipeline, line: RequestLine, caller: Caller, priority: int | None = None
) -> LineResult:
    """Runs `line` to its end through `pipeline`. Returns its result (success or the
    error the endpoint would have answered); raises LineInterrupted for a retryable
    refusal or an aborted run. Mutates nothing but what the pipeline's policies do."""
    prefix = "chatcmpl" if line.kind == "chat" else "cmpl"
    request_id = f"{prefix}-{uuid.uuid4().hex}"
    try:
        body = validate_body(line)
        call = Call.new(line.kind, body, caller=caller, priority=priority, request_id=request_id)
        handle = await pipeline.run(call)
    except TokenmillError as exc:
        if exc.status_code in RETRYABLE_STATUS:
            raise LineInterrupted(exc.message, getattr(exc, "retry_after_s", None)) from exc
        return LineResult(response_error_record(line.custom_id, request_id, exc), ok=False)
    except Exception as exc:
        logger.exception("batch line %r failed", line.custom_id)
        return LineResult(internal_error_record(line.custom_id, request_id, exc), ok=False)
    result = handle.result
    assert result is not None
    if any(c.finish_reason == "abort" for choices in result.choices for c in choices):
        raise LineInterrupted("the engine aborted the request (the server is draining)")
    tokenizer = getattr(handle.ctx.route.backend, "tokenizer", None)
    fmt = chat_response if call.kind == "chat" else completion_response
    payload = fmt(request_id, handle.ctx.body, result, tokenizer)
    record = success_record(line.custom_id, request_id, payload.model_dump(mode="json"))
    return LineResult(record, ok=True, usage=result.usage)
