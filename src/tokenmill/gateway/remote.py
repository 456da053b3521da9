"""A remote OpenAI-compatible server as a backend (a fallback target).

The call's body is sent as it stands after the input policies (so redacted text stays
redacted), always streamed, and the server's chunks come back as ChoiceDeltas. Token
ids and logprobs stay on the remote side; usage comes from its final usage chunk.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from tokenmill.errors import ServiceUnavailableError, TokenmillError
from tokenmill.gateway.call import ChoiceDelta, PromptInfo, Usage
from tokenmill.gateway.policy import CallContext


class RemoteError(TokenmillError):
    """The remote server refused or failed; carries its status and message."""

    def __init__(self, status: int, message: str, code: str | None):
        super().__init__(message, code=code or "remote_error")
        self.status_code = status
        self.error_type = "server_error" if status >= 500 else "invalid_request_error"


class RemoteBackend:
    """Streams a call from `base_url` (".../v1")."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float | None = 600.0,
        client: httpx.AsyncClient | None = None,
    ):
        self.name = base_url.rstrip("/")
        self.base_url = self.name
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))

    async def start(self, ctx: CallContext) -> _RemoteStream:
        body = ctx.body.model_dump(exclude_none=True)
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        path = "/chat/completions" if ctx.call.kind == "chat" else "/completions"
        request = self._client.build_request(
            "POST", self.base_url + path, json=body, headers={"x-request-id": ctx.call.request_id}
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"{self.name} is unreachable: {exc}", code="fallback_unreachable"
            ) from None
        if response.status_code != 200:
            raw = await response.aread()
            await response.aclose()
            raise _error(response.status_code, raw)
        return _RemoteStream(response, ctx.body.n, _prompt_texts(ctx))


def _prompt_texts(ctx: CallContext) -> list[str | None]:
    if ctx.call.kind == "chat":
        return [None]
    prompt = ctx.body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(p, int) for p in prompt):
        return [None]
    return [p if isinstance(p, str) else None for p in prompt]


class _RemoteStream:
    """A remote response's chunks; `usage` is the server's own count, once it sent it."""

    def __init__(self, response: httpx.Response, n: int, texts: list[str | None]):
        self.response = response
        self.n = n
        self.prompts = [PromptInfo(token_ids=[], text=t) for t in texts]
        self.usage: Usage | None = None

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        try:
            async for line in self.response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    err = chunk["error"]
                    raise RemoteError(
                        502, f"the fallback server failed: {err.get('message')}", err.get("code")
                    )
                if chunk.get("usage"):
                    u = chunk["usage"]
                    self.usage = Usage(
                        u.get("prompt_tokens", 0),
                        u.get("completion_tokens", 0),
                        (u.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
                    )
                for choice in chunk.get("choices", []):
                    text = choice.get("text")
                    if text is None:
                        text = (choice.get("delta") or {}).get("content") or ""
                    index = choice["index"]
                    yield ChoiceDelta(
                        index // self.n,
                        index % self.n,
                        text,
                        [],
                        None,
                        choice.get("finish_reason"),
                        choice.get("stop_reason"),
                    )
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"the fallback server's stream broke: {exc}", code="fallback_unreachable"
            ) from None
        finally:
            await self.response.aclose()

    def close(self) -> None:
        import asyncio

        asyncio.ensure_future(self.response.aclose())


def _error(status: int, raw: bytes) -> RemoteError:
    try:
        err = json.loads(raw)["error"]
        return RemoteError(status, err.get("message", ""), err.get("code"))
    except (ValueError, KeyError, TypeError):
        return RemoteError(status, raw.decode(errors="replace")[:500], None)
