"""The Batch API's line format, shared by the Batch API, `tokenmill batch` and the Kafka worker.

An input line is one request: `{"custom_id", "method": "POST", "url", "body"}`. Each line
ends as exactly one result line, OpenAI's shape:

    {"id": "batch_req_...", "custom_id": ..., "response": {"status_code", "request_id",
     "body"}, "error": null}

A request the endpoint answered with an error keeps that shape, its `status_code` and its
OpenAI error body. A line that is not a request at all (not JSON, no custom_id, another
endpoint) has `"response": null` and `"error": {"code", "message"}`.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tokenmill.errors import TokenmillError
from tokenmill.gateway.call import Body, CallKind
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.completion import CompletionRequest
from tokenmill.server.errors import describe_validation_errors, error_body, error_from_exception

ENDPOINTS: dict[str, CallKind] = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}
BODY_TYPES: dict[CallKind, type[Body]] = {
    "chat": ChatCompletionRequest,
    "completion": CompletionRequest,
}
MAX_CUSTOM_ID = 512
# Recovers the custom_id of a line that is not valid JSON, so its error can name it.
_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"((?:[^"\\]|\\.){1,512})"')


@dataclass(frozen=True)
class RequestLine:
    """A well-formed input line: a request for one of ENDPOINTS (its body not yet
    validated; `validate_body` does that, as the endpoint would)."""

    custom_id: str
    url: str
    body: dict[str, Any]

    @property
    def kind(self) -> CallKind:
        return ENDPOINTS[self.url]

    def to_json(self) -> str:
        return json.dumps({"custom_id": self.custom_id, "url": self.url, "body": self.body})

    @classmethod
    def from_json(cls, text: str) -> RequestLine:
        data = json.loads(text)
        return cls(data["custom_id"], data["url"], data["body"])


@dataclass(frozen=True)
class MalformedLine:
    """An input line that is not a request; `custom_id` when one could be read."""

    custom_id: str | None
    code: str
    message: str


def new_line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex}"


def parse_line(text: str, line_no: int | None = None, endpoint: str | None = None):
    """`text` as a RequestLine, or a MalformedLine saying what is wrong. `endpoint`, when
    given, is the only url allowed (a batch's lines all go to its endpoint). `line_no`
    (1-based) is named in messages. Never raises."""
    where = f"Line {line_no}" if line_no is not None else "The message"
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        match = _CUSTOM_ID.search(text) if isinstance(text, str) else None
        custom_id = _unescape(match.group(1)) if match else None
        return MalformedLine(custom_id, "invalid_json", f"{where} is not valid JSON: {exc}.")
    if not isinstance(data, dict):
        return MalformedLine(None, "invalid_request", f"{where} must be a JSON object.")
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return MalformedLine(
            None,
            "missing_custom_id",
            f"{where} needs a custom_id: a non-empty string that identifies its result.",
        )
    if len(custom_id) > MAX_CUSTOM_ID:
        return MalformedLine(
            custom_id[:MAX_CUSTOM_ID],
            "invalid_custom_id",
            f"{where}: custom_id is {len(custom_id)} characters long; at most {MAX_CUSTOM_ID}.",
        )
    method = data.get("method")
    if not isinstance(method, str) or method.upper() != "POST":
        return MalformedLine(
            custom_id, "invalid_method", f"{where}: method must be POST, got {method!r}."
        )
    url = data.get("url")
    if url not in ENDPOINTS:
        supported = ", ".join(ENDPOINTS)
        return MalformedLine(
            custom_id, "invalid_url", f"{where}: url {url!r} is not served; use one of {supported}."
        )
    if endpoint is not None and url != endpoint:
        return MalformedLine(
            custom_id,
            "mismatched_url",
            f"{where}: url {url!r} differs from the batch's endpoint {endpoint!r}; every "
            "request of a batch goes to its endpoint.",
        )
    body = data.get("body")
    if not isinstance(body, dict):
        return MalformedLine(custom_id, "invalid_body", f"{where}: body must be a JSON object.")
    unknown = sorted(set(data) - {"custom_id", "method", "url", "body"})
    if unknown:
        return MalformedLine(
            custom_id,
            "invalid_request",
            f"{where}: unknown field(s) {', '.join(unknown)}; a line has custom_id, method, "
            "url and body.",
        )
    return RequestLine(custom_id, url, body)


def validate_body(line: RequestLine) -> Body:
    """The line's body as its endpoint's request model. Raises BodyError (HTTP 400, as
    the endpoint answers) when it does not validate or asks to stream."""
    try:
        body = BODY_TYPES[line.kind].model_validate(line.body)
    except ValidationError as exc:
        message, param = describe_validation_errors(list(exc.errors()))
        raise BodyError(message, param=param) from None
    if body.stream:
        raise BodyError(
            "stream is not supported in batch requests: each result is written whole. "
            "Remove stream (and stream_options).",
            param="stream",
        )
    return body


class BodyError(TokenmillError):
    """A batch line's body is not a valid request for its endpoint (HTTP 400)."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"


def success_record(custom_id: str, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The result line of a request that succeeded."""
    return {
        "id": new_line_id(),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def response_error_record(custom_id: str, request_id: str, exc: TokenmillError) -> dict[str, Any]:
    """The result line of a request the endpoint refused: its status and error body."""
    return {
        "id": new_line_id(),
        "custom_id": custom_id,
        "response": {
            "status_code": exc.status_code,
            "request_id": request_id,
            "body": error_from_exception(exc),
        },
        "error": None,
    }


def internal_error_record(custom_id: str, request_id: str, exc: BaseException) -> dict[str, Any]:
    """The result line of a request that failed inside the server (HTTP 500)."""
    body = error_body(
        f"Internal server error ({type(exc).__name__}); the server log has the details.",
        "server_error",
        None,
        "internal_error",
    )
    return {
        "id": new_line_id(),
        "custom_id": custom_id,
        "response": {"status_code": 500, "request_id": request_id, "body": body},
        "error": None,
    }


def line_error_record(custom_id: str | None, code: str, message: str) -> dict[str, Any]:
    """The result line of an input line that never became a request."""
    return {
        "id": new_line_id(),
        "custom_id": custom_id,
        "response": None,
        "error": {"code": code, "message": message},
    }


def malformed_record(line: MalformedLine) -> dict[str, Any]:
    return line_error_record(line.custom_id, line.code, line.message)


def _unescape(raw: str) -> str:
    try:
        return json.loads(f'"{raw}"')
    except ValueError:
        return raw
