"""Pure-ASGI Host check: a server on loopback answers only requests addressed to it.

A web page can make a browser send requests to 127.0.0.1 under a name its attacker
controls (DNS rebinding): the browser then treats the server's answers as the page's
own. Such requests still carry the attacker's name in `Host`, so refusing names the
server was not told about closes the hole. `ServerConfig.host_patterns` says which
names are accepted: `--allowed-hosts`, else the loopback names on a loopback address,
else any.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from tokenmill.errors import InvalidRequestError
from tokenmill.server.errors import send_error

PROBES = frozenset({"/health", "/ready"})


def host_name(value: str) -> str:
    """The name in a Host header, without its port: `[::1]:8000` -> `::1`."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    name, _, _port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return name


def host_allowed(name: str, patterns: tuple[str, ...]) -> bool:
    """`name` is one of `patterns`: exact names, `*` for any, `*.example.com` for any
    subdomain of example.com."""
    for pattern in patterns:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class HostGuard:
    """Answers 400 `host_not_allowed` to HTTP requests whose Host is not accepted.

    A request without a Host header (HTTP/1.0 from a script; browsers always send one)
    is let through, and so are the probes (/health, /ready): an orchestrator addresses
    them by the pod's IP, and they reveal nothing a page could use.
    """

    def __init__(self, app: ASGIApp, patterns: tuple[str, ...]):
        self.app = app
        self.patterns = patterns
        self.open = "*" in patterns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.open or scope["type"] != "http" or scope.get("path") in PROBES:
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope.get("headers", ()) if k == b"host"), None)
        if host is None or host_allowed(host_name(host.decode("latin-1")), self.patterns):
            await self.app(scope, receive, send)
            return
        error = InvalidRequestError(
            f"The Host header names {host_name(host.decode('latin-1'))!r}, which this server "
            f"does not answer to (accepted: {', '.join(self.patterns)}). Start it with "
            "--allowed-hosts to accept more names.",
            code="host_not_allowed",
        )
        await send_error(send, error)
