"""A raw HTTP request carried from the ingress to a replica, and the replica's answer.

The replica runs the request through its in-process ASGI app exactly as uvicorn would
(one body message in, start and body messages out), so every route, middleware and
error handler of `tokenmill serve` applies unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ForwardedRequest:
    """One HTTP request as the ingress received it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    prefix_key: str | None = None
    """Hash of the prompt's first characters; the request router's affinity key."""


@dataclass(frozen=True)
class ResponseHead:
    """Status and headers of a replica's response, and which replica answered."""

    status: int
    headers: tuple[tuple[str, str], ...]
    replica: str


@dataclass(frozen=True)
class ReplicaReply:
    """A whole (non-streaming) response."""

    head: ResponseHead
    body: bytes


def prompt_prefix_key(payload: object, chars: int) -> str | None:
    """A short hash of the first `chars` characters of a completion's prompt or of the
    chat messages' text, or None (no prompt, or `chars` 0)."""
    if chars <= 0 or not isinstance(payload, dict):
        return None
    text = _prompt_text(payload)
    if not text:
        return None
    return hashlib.blake2b(text[:chars].encode(), digest_size=8).hexdigest()


def _prompt_text(payload: dict) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        return first if isinstance(first, str) else json.dumps(prompt[:64])
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return ""
    parts = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        parts.append(f"{message.get('role', '')}:{text}\n")
    return "".join(parts)


async def call_app(app, request: ForwardedRequest, replica: str) -> AsyncIterator[object]:
    """Runs `request` through the ASGI `app`; yields the ResponseHead, then each body
    chunk (bytes) as the app sends it. Closing the iterator early tells the app the
    client disconnected (its streams stop generating)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": request.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 80),
    }
    messages: asyncio.Queue = asyncio.Queue()
    disconnected = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        await messages.put(message)

    async def run() -> None:
        try:
            await app(scope, receive, send)
        finally:
            await messages.put(None)

    task = asyncio.ensure_future(run())
    try:
        while True:
            message = await messages.get()
            if message is None:
                break
            if message["type"] == "http.response.start":
                headers = tuple(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
                )
                yield ResponseHead(message["status"], headers, replica)
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    break
        await task  # re-raises what the app raised past its error handlers
    finally:
        disconnected.set()
        if not task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=30)
