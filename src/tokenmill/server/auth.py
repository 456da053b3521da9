"""Pure-ASGI authentication: every HTTP request but the probes must carry a known key.

With keys configured, /v1/*, /tokenize, /metrics, /openapi.json, /docs and the rest
answer 401 (OpenAI's shape, `invalid_api_key`) without one. Only the liveness and
readiness probes stay open (/health, /ready), and the console's static page (/ui),
which asks for a key before it calls anything. The caller found is put in the ASGI
scope as "tokenmill.caller" for the gateway.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenmill.gateway.auth import AuthenticationError, KeyStore
from tokenmill.server.errors import send_error

OPEN_PATHS = frozenset({"/health", "/ready"})
OPEN_PREFIXES = ("/ui",)
CALLER_SCOPE_KEY = "tokenmill.caller"


def presented_key(scope: Scope) -> str | None:
    """The key from `Authorization: Bearer KEY` or `x-api-key: KEY`."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


class AuthMiddleware:
    """Answers 401 to requests without a valid key, when keys are configured."""

    def __init__(self, app: ASGIApp, keys: KeyStore):
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        try:
            scope[CALLER_SCOPE_KEY] = self.keys.authenticate(presented_key(scope))
        except AuthenticationError as exc:
            await send_error(send, exc, {"www-authenticate": 'Bearer realm="tokenmill"'})
            return
        await self.app(scope, receive, send)
