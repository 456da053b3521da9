"""Pure-ASGI middleware: refuse oversized request bodies before anything parses them."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tokenmill.server.errors import PayloadTooLargeError, send_error


class BodySizeLimit:
    """Answers 413 to HTTP requests whose body exceeds `max_bytes` (or, for a path in
    `path_limits`, that path's own limit: file uploads).

    A declared Content-Length over the limit is refused without reading the body. A
    chunked body is read up to the limit, then either refused or replayed to the app;
    after the replay the app's `receive` is the server's again, so disconnects still
    reach it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, path_limits: dict[str, int] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        limit = self.path_limits.get(path, self.max_bytes)
        length = _content_length(scope)
        if length is not None:
            if length > limit:
                await self._refuse(send, limit, path in self.path_limits)
                return
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(send, limit, path in self.path_limits)
                return
            if not message.get("more_body", False):
                break
        replayed = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([replayed], receive), send)

    async def _refuse(self, send: Send, limit: int, upload: bool) -> None:
        flag = "--batch-max-file-mib" if upload else "--max-body-mib"
        await send_error(send, PayloadTooLargeError(limit, flag), {"connection": "close"})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay_receive() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay_receive
