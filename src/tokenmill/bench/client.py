"""One streaming request to an OpenAI-compatible server, timed token by token.

The client speaks Server-Sent Events over httpx: each `data:` line is a chunk; a chunk
whose choice carries text is a token arrival; the final chunk's `usage` (asked for with
`stream_options.include_usage`) gives the exact token counts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx

from tokenmill.bench.metrics import RequestResult
from tokenmill.bench.workload import BenchRequest

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
ERROR_BODY_CHARS = 300
# A benchmark measures generation, so no request may be answered from a response cache
# (tokenmill's, or a proxy's): a run that the busy gate repeats sends the same prompts
# again, and one did come back from tokenmill's cache at 34116 tok/s in a comparison.
# Servers without a cache ignore the header.
HEADERS = {"Cache-Control": "no-cache"}


@dataclass(frozen=True)
class RequestOptions:
    """How every request of a run is shaped."""

    model: str
    endpoint: str = "completions"
    """"chat" or "completions"."""
    ignore_eos: bool = True
    """Ask the server to run to max_tokens (non-standard; tokenmill, vLLM and llama.cpp honour it)."""
    temperature: float = 0.0

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {sorted(ENDPOINTS)}, got {self.endpoint!r}.")

    def body(self, request: BenchRequest) -> dict:
        """The JSON body for one request."""
        body: dict = {
            "model": self.model,
            "max_tokens": request.output_len,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": request.prompt}]
        else:
            body["prompt"] = request.prompt
        return body


def chunk_text(chunk: dict) -> str:
    """The generated text a chunk carries (chat delta or completion text), "" if none."""
    text = ""
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if piece:
            text += piece
    return text


async def send_request(
    client: httpx.AsyncClient, options: RequestOptions, request: BenchRequest
) -> RequestResult:
    """Send `request`, stream the answer, and time it. Never raises for server or transport
    errors: those come back as a failed RequestResult whose `error` says what happened."""
    result = RequestResult(success=False, prompt_tokens=request.prompt_len)
    chunks = 0
    usage: dict | None = None
    start = last = time.perf_counter()
    try:
        async with client.stream(
            "POST", ENDPOINTS[options.endpoint], json=options.body(request), headers=HEADERS
        ) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")[:ERROR_BODY_CHARS]
                result.error = f"HTTP {response.status_code}: {body}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = f"stream error: {json.dumps(chunk['error'])[:ERROR_BODY_CHARS]}"
                    return result
                now = time.perf_counter()
                if chunk_text(chunk):
                    if chunks == 0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    chunks += 1
                    last = now
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    result.e2e = time.perf_counter() - start
    if chunks == 0:
        result.error = "the stream ended without any generated text"
        return result
    result.output_tokens = chunks
    if usage:
        result.output_tokens = int(usage.get("completion_tokens") or chunks)
        result.prompt_tokens = int(usage.get("prompt_tokens") or request.prompt_len)
    result.success = True
    return result
