"""The ingress deployment: hands each HTTP request to its model's deployment.

It parses no more than the JSON body's `model`, `stream` and prompt prefix; the
replica's app does everything else. A non-streaming request whose replica dies is
retried on another replica; a stream whose replica dies before its first byte is
retried too, and one that dies mid-stream ends with an OpenAI-shaped error event.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from ray.exceptions import ActorUnavailableError, RayActorError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from tokenmill.ray.forwarding import ForwardedRequest, ResponseHead, prompt_prefix_key
from tokenmill.server.errors import error_body
from tokenmill.server.streaming import sse_frame

logger = logging.getLogger("tokenmill.ray")

REPLICA_HEADER = "x-tokenmill-replica"
"""Which replica answered (its Serve replica id): for tests, logs and debugging."""
RETRIES_HEADER = "x-tokenmill-retries"
"""How many times the request was sent again after its replica died (absent: none)."""
REPLICA_LOST = (RayActorError, ActorUnavailableError)
# Serve's proxy sets its own x-request-id (the same id, which the app echoed).
_HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "x-request-id"}


class Ingress:
    """Routes requests by their `model` to that model's DeploymentHandle (the first
    model's for requests naming none or an unknown one: its app answers those)."""

    def __init__(self, handles: dict, prefix_chars: int, max_retries: int):
        self.handles = handles
        self.default = next(iter(handles))
        self.prefix_chars = prefix_chars
        self.max_retries = max_retries

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        payload = _json(body) if request.method == "POST" else None
        model = payload.get("model") if isinstance(payload, dict) else None
        handle = self.handles.get(model) or self.handles[self.default]
        forwarded = ForwardedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=tuple(request.headers.items()),
            body=body,
            prefix_key=prompt_prefix_key(payload, self.prefix_chars),
        )
        if isinstance(payload, dict) and payload.get("stream") is True:
            return await self._stream(handle, forwarded)
        return await self._whole(handle, forwarded)

    async def _whole(self, handle, forwarded: ForwardedRequest) -> Response:
        for attempt in range(self.max_retries + 1):
            try:
                reply = await handle.handle.remote(forwarded)
            except REPLICA_LOST as exc:
                logger.warning("replica lost (attempt %d): %s", attempt + 1, _short(exc))
                continue
            return Response(reply.body, reply.head.status, _headers(reply.head, attempt))
        return _replica_lost(self.max_retries)

    async def _stream(self, handle, forwarded: ForwardedRequest) -> Response:
        for attempt in range(self.max_retries + 1):
            chunks = handle.options(stream=True).stream.remote(forwarded)
            try:
                head = await chunks.__anext__()
            except REPLICA_LOST as exc:
                logger.warning(
                    "replica lost before streaming (attempt %d): %s", attempt + 1, _short(exc)
                )
                continue
            if not isinstance(head, ResponseHead):
                raise TypeError("the replica's stream did not start with its head")
            return StreamingResponse(
                _relay(chunks, head.replica), head.status, _headers(head, attempt)
            )
        return _replica_lost(self.max_retries)


async def _relay(chunks, replica: str) -> AsyncIterator[bytes]:
    """The replica's body chunks; if the replica dies mid-stream, a final error event
    (the client's SDK raises it as an APIError) instead of a silent cut."""
    try:
        async for chunk in chunks:
            yield chunk
    except REPLICA_LOST as exc:
        logger.warning("replica %s lost mid-stream: %s", replica, _short(exc))
        message = (
            f"The replica serving this stream ({replica}) died mid-response, so the output "
            "above is incomplete. Ray Serve is replacing it; send the request again."
        )
        yield sse_frame(error_body(message, "server_error", None, "replica_died")).encode()


def _headers(head: ResponseHead, retries: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in head.headers:
        if key.lower() in _HOP_HEADERS:
            continue
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    headers[REPLICA_HEADER] = head.replica
    if retries:
        headers[RETRIES_HEADER] = str(retries)
    return headers


def _replica_lost(retries: int) -> Response:
    message = (
        f"The model replica died while serving this request, and {retries} retries on other "
        "replicas failed too. Ray Serve replaces dead replicas; retry shortly."
    )
    return JSONResponse(
        error_body(message, "server_error", None, "replica_died"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _json(body: bytes):
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None  # the replica's app answers the malformed body with a 400


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
