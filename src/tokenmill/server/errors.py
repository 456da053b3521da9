"""Every failure leaves the server as an OpenAI-shaped error with the right status.

`{"error": {"message", "type", "param", "code"}}`: the message says what was wrong and
what to change. Pydantic's validation dumps never reach the client as such; they are
rewritten into one readable sentence per problem.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tokenmill.errors import RequestTimeoutError, ServiceUnavailableError, TokenmillError

logger = logging.getLogger(__name__)


class PayloadTooLargeError(TokenmillError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status_code = 413
    error_type = "invalid_request_error"

    def __init__(self, limit_bytes: int, flag: str = "--max-body-mib"):
        super().__init__(
            f"The request body is larger than the server's limit of {limit_bytes} bytes. "
            f"Send a smaller request or start the server with a larger {flag}.",
            code="request_too_large",
        )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}


def error_body(message: str, error_type: str, param: str | None, code: str) -> dict[str, Any]:
    """The JSON body OpenAI clients parse into an APIError. `code` is always a snake_case
    string (OpenAI's documented codes are), never a number or null."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_from_exception(exc: TokenmillError) -> dict[str, Any]:
    """The error body for a typed tokenmill error."""
    return error_body(exc.message, exc.error_type, exc.param, exc.code)


def error_response(exc: TokenmillError) -> JSONResponse:
    """A JSON response for `exc`, with Retry-After where the error says when to retry."""
    headers = dict(getattr(exc, "headers", None) or {})
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(error_from_exception(exc), status_code=exc.status_code, headers=headers)


async def send_error(send, exc: TokenmillError, headers: dict[str, str] | None = None) -> None:
    """Answers `exc` from a pure-ASGI middleware (before any route runs)."""
    payload = json.dumps(error_from_exception(exc)).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def describe_validation_errors(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One readable message for pydantic's errors, and the first offending field.

    When every branch of a union fails (`prompt` is a string, or a list of strings, or
    ...), the branch that got furthest into the value speaks for the field. Input values
    are left out on purpose: they can be huge (a whole prompt) or private.
    """
    chosen: dict[tuple, tuple[str, dict[str, Any]]] = {}
    for err in errors:
        raw = [p for p in err.get("loc", ()) if p != "body"]
        cut = next((i for i, p in enumerate(raw) if _is_union_tag(p)), len(raw))
        field = tuple(raw[:cut])
        param = _dotted([str(p) for p in raw if not _is_union_tag(p)])
        if field not in chosen or len(param) > len(chosen[field][0]):
            chosen[field] = (param, err)
    parts = []
    first_param = None
    for param, err in list(chosen.values())[:5]:
        if err.get("type") == "json_invalid":
            # pydantic's location is a character offset, not a field: name no param.
            ctx = err.get("ctx") or {}
            parts.append(f"the body is not valid JSON ({ctx.get('error', 'parse error')})")
            continue
        msg = err.get("msg", "invalid value")
        if err.get("type") == "string_unicode":
            msg = "contains a lone UTF-16 surrogate (such as \\ud800), which is not valid text"
        if first_param is None and param:
            first_param = param
        parts.append(f"{param or 'body'}: {msg}")
    more = len(chosen) - len(parts)
    message = "Invalid request: " + "; ".join(parts) + (f" (and {more} more)" if more else "")
    return message + ".", first_param


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


def _is_union_tag(part: object) -> bool:
    """pydantic names the branch of a union that failed ("str", "list[int]",
    "function-after[...]") in the error location; it is not a field."""
    return isinstance(part, str) and (
        "[" in part or part in _TYPE_TAGS or part.startswith(("function-", "constrained-"))
    )


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Routes every exception type the app can raise to an OpenAI-shaped response."""

    @app.exception_handler(TokenmillError)
    async def _tokenmill_error(_: Request, exc: TokenmillError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("request failed: %s", exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_errors(list(exc.errors()))
        return JSONResponse(
            error_body(message, "invalid_request_error", param, "invalid_value"),
            status_code=400,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"There is no route {request.method} {request.url.path}; see /docs."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(message, error_type, None, code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request", exc_info=exc)
        return JSONResponse(
            error_body(
                f"Internal server error ({type(exc).__name__}); the server log has the details.",
                "server_error",
                None,
                "internal_error",
            ),
            status_code=500,
        )


__all__ = [
    "PayloadTooLargeError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "describe_validation_errors",
    "error_body",
    "error_response",
    "install_error_handlers",
]
