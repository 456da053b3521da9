"""Pure-ASGI middleware: every HTTP request gets an id, logged on its lines and echoed.

The id is the client's `X-Request-Id` when it sent a usable one (printable ASCII, at
most MAX_LENGTH characters), else a new one; the response carries it back in the same
header, so a client can quote it when reporting a problem.
"""

from __future__ import annotations

import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenmill.observability.log_records import request_id_var

HEADER = b"x-request-id"
MAX_LENGTH = 128
SCOPE_KEY = "tokenmill.request_id"


def usable(value: bytes) -> bool:
    return 0 < len(value) <= MAX_LENGTH and all(0x21 <= b <= 0x7E for b in value)


class RequestId:
    """Sets the request id for the request's whole ASGI call and echoes it back."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == HEADER), b"")
        request_id = given.decode("ascii") if usable(given) else uuid.uuid4().hex
        scope[SCOPE_KEY] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != HEADER]
                headers.append((HEADER, request_id.encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)
