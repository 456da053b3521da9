"""Connection-level guards that ASGI cannot express: deadlines for a request's headers
and body, a cap on open connections, and a limit on header size.

uvicorn (h11) holds a connection as long as its client trickles bytes: a slowloris
client sending a header byte a second, or a thousand half-open sockets, would be kept
forever and eventually exhaust the process's descriptors. `guarded_protocol(limits)`
is uvicorn's h11 protocol with:

- a header deadline, from the moment a connection waits for a request (it connected,
  or its previous response ended) until the request's headers are complete: past it
  the client gets 408 and is disconnected;
- a body deadline, from the end of the headers to the end of the body (408 likewise);
- a header size limit counted as bytes arrive (h11 alone accepts any size sent in
  one burst): past it, 431;
- a connection cap: a new connection past it closes the oldest connection that is
  still waiting for a request (idle or trickling), and only when every connection has
  a request in progress is the newcomer refused with 503 and Retry-After. Attackers
  holding sockets open therefore cannot lock out a real client.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """The deadlines and sizes one server applies to every connection."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 1000
    max_header_bytes: int = 32 * 1024


def _raw_response(status: int, reason: str, message: str, code: str, retry: bool) -> bytes:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    ).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry:
        head.append("retry-after: 1")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with `limits` applied (pass it as Config(http=...))."""

    class GuardedH11Protocol(H11Protocol):
        """One connection. Waiting for a request = between `_await_request` and the
        request's headers; a connection in that state may be closed to make room."""

        def connection_made(self, transport) -> None:  # type: ignore[override]
            self._timer = None
            self._waiting_since: float | None = None
            self._header_bytes = 0
            self._tail = b""
            self._seen_cycle = None
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections and not self._make_room():
                logger.warning("connection limit (%d) reached: refusing", limits.max_connections)
                self._refuse(
                    503,
                    "Service Unavailable",
                    f"The server has {limits.max_connections} connections open, all busy "
                    "(--max-connections). Retry shortly.",
                    "too_many_connections",
                    retry=True,
                )
                return
            self._await_request()

        def _make_room(self) -> bool:
            """Close the connection that has waited longest for its request, if any."""
            idle = [
                c
                for c in self.connections
                if c is not self and getattr(c, "_waiting_since", None) is not None
            ]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._waiting_since)
            oldest._close_silently()
            return True

        def _await_request(self) -> None:
            self._waiting_since = self.loop.time()
            self._header_bytes = 0
            self._tail = b""
            self._arm(limits.header_timeout_s, self._header_timeout)

        def _arm(self, delay: float, callback) -> None:
            self._disarm()
            self._timer = self.loop.call_later(delay, callback)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def data_received(self, data: bytes) -> None:
            if self._waiting_since is not None:
                end = (self._tail + data).find(b"\r\n\r\n")
                counted = len(data) if end < 0 else end + 4 - len(self._tail)
                self._header_bytes += max(0, counted)
                self._tail = (self._tail + data)[-3:]
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse(
                        431,
                        "Request Header Fields Too Large",
                        f"The request line and headers exceed {limits.max_header_bytes} "
                        "bytes (--max-header-kib).",
                        "headers_too_large",
                    )
                    return
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            cycle = self.cycle
            if cycle is not None and cycle is not self._seen_cycle:
                self._seen_cycle = cycle  # a request's headers are in
                self._waiting_since = None
                self._disarm()
                if cycle.more_body:
                    self._arm(limits.body_timeout_s, self._body_timeout)
            elif (
                cycle is not None
                and not cycle.more_body
                and self._waiting_since is None
                and self._timer is not None
                and not cycle.response_complete
            ):
                self._disarm()  # the body is complete

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._await_request()  # before a pipelined request's headers are read
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            self._waiting_since = None
            super().connection_lost(exc)

        def _header_timeout(self) -> None:
            if self._waiting_since is None or self.transport.is_closing():
                return
            if self._header_bytes == 0:
                self._close_silently()  # never said anything: nothing to answer
                return
            self._refuse(
                408,
                "Request Timeout",
                f"The request's headers did not arrive within {limits.header_timeout_s:g} s "
                "(--header-timeout).",
                "header_timeout",
            )

        def _body_timeout(self) -> None:
            cycle = self.cycle
            if cycle is None or not cycle.more_body or self.transport.is_closing():
                return
            if cycle.response_started:
                self._close_silently()
                return
            cycle.disconnected = True  # the app's writes are dropped from here on
            cycle.message_event.set()
            self._refuse(
                408,
                "Request Timeout",
                f"The request body did not arrive within {limits.body_timeout_s:g} s "
                "(--body-timeout).",
                "body_timeout",
            )

        def _refuse(self, status, reason, message, code, retry: bool = False) -> None:
            self._disarm()
            self._waiting_since = None
            if not self.transport.is_closing():
                self.transport.write(_raw_response(status, reason, message, code, retry))
                self.transport.close()

        def _close_silently(self) -> None:
            self._disarm()
            self._waiting_since = None
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol
