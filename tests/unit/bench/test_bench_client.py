"""The streaming client and the load generator against an in-process fake server."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from tokenmill.bench.client import RequestOptions, chunk_text, send_request
from tokenmill.bench.load import LoadLevel, run_level
from tokenmill.bench.metrics import SLO
from tokenmill.bench.workload import BenchRequest

REQ = BenchRequest(prompt="hello", prompt_len=5, output_len=4)


def sse(chunks: list[dict]) -> bytes:
    lines = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
    return "".join(lines).encode()


def completion_chunks(pieces: list[str], usage: dict | None) -> list[dict]:
    chunks = [{"choices": [{"index": 0, "text": p}]} for p in pieces]
    if usage is not None:
        chunks.append({"choices": [], "usage": usage})
    return chunks


def run_one(handler, options: RequestOptions | None = None, request: BenchRequest = REQ):
    async def go():
        transport = httpx.MockTransport(handler)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await send_request(client, options or RequestOptions(model="m"), request)

    return asyncio.run(go())


def test_request_body_asks_for_usage_and_fixed_lengths():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["path"] = request.url.path
        seen["body"] = json.loads(request.content)
        seen["cache"] = request.headers.get("cache-control")
        return httpx.Response(200, content=sse(completion_chunks(["a"], None)))

    run_one(handler, RequestOptions(model="m", endpoint="chat"))
    body = seen["body"]
    assert seen["path"] == "/v1/chat/completions"
    # Generation is measured, never a response cache's answer to a repeated prompt.
    assert seen["cache"] == "no-cache"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    assert body["stream_options"] == {"include_usage": True}
    assert body["ignore_eos"] is True and body["max_tokens"] == 4


def test_usage_chunk_gives_exact_token_counts():
    chunks = completion_chunks(["a", "", "bc", "d"], {"prompt_tokens": 6, "completion_tokens": 5})

    result = run_one(lambda r: httpx.Response(200, content=sse(chunks)))
    assert result.success and result.error == ""
    assert result.output_tokens == 5  # usage, not the 3 text-carrying chunks
    assert result.prompt_tokens == 6
    assert len(result.itl) == 2
    assert 0 < result.ttft <= result.e2e


def test_without_usage_the_text_chunks_are_counted():
    chunks = completion_chunks(["a", "b", "c"], None)
    result = run_one(lambda r: httpx.Response(200, content=sse(chunks)))
    assert (result.output_tokens, result.prompt_tokens) == (3, 5)


def test_chat_deltas_without_content_are_not_tokens():
    assert chunk_text({"choices": [{"delta": {"role": "assistant"}}]}) == ""
    assert chunk_text({"choices": [{"delta": {"content": "hi"}}]}) == "hi"
    assert chunk_text({"choices": [], "usage": {}}) == ""


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(429, text='{"error": {"message": "queue full"}}'), "HTTP 429"),
        (httpx.Response(200, content=sse([{"error": {"message": "boom"}}])), "stream error"),
        (httpx.Response(200, content=sse([])), "without any generated text"),
    ],
)
def test_failures_come_back_as_values(response, expected):
    result = run_one(lambda r: response)
    assert not result.success
    assert expected in result.error


def test_transport_errors_come_back_as_values():
    def handler(request):
        raise httpx.ConnectError("refused")

    result = run_one(handler)
    assert not result.success and "ConnectError" in result.error


def run_load(level: LoadLevel, n: int, delay: float = 0.01, max_duration_s: float = 30.0):
    state = {"now": 0, "peak": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        await asyncio.sleep(delay)
        state["now"] -= 1
        chunks = completion_chunks(["x", "y"], {"prompt_tokens": 5, "completion_tokens": 2})
        return httpx.Response(200, content=sse(chunks))

    async def go():
        async with httpx.AsyncClient(
            transport=httpx.MockTransport(handler), base_url="http://test"
        ) as client:
            return await run_level(
                client,
                RequestOptions(model="m"),
                [REQ] * n,
                level,
                SLO(),
                seed=1,
                max_duration_s=max_duration_s,
                progress=False,
            )

    return asyncio.run(go()), state["peak"]


def test_closed_loop_keeps_exactly_concurrency_in_flight():
    result, peak = run_load(LoadLevel(concurrency=3), n=10)
    assert peak == 3
    assert result.metrics.completed == 10 and result.metrics.failed == 0
    assert result.metrics.total_output_tokens == 20


def test_infinite_rate_sends_everything_at_once():
    result, peak = run_load(LoadLevel(request_rate=math.inf), n=7)
    assert peak == 7 and result.metrics.completed == 7


def test_poisson_rate_spaces_arrivals():
    result, _ = run_load(LoadLevel(request_rate=50.0), n=10, delay=0.0)
    assert result.metrics.completed == 10
    assert result.metrics.duration_s > 0.05  # ten arrivals at 50/s take ~0.2 s on average


def test_time_limit_counts_unfinished_requests_as_failed():
    result, _ = run_load(LoadLevel(concurrency=1), n=5, delay=0.2, max_duration_s=0.3)
    m = result.metrics
    assert m.completed == 1 and m.failed == 4
    assert "0.3 s limit" in m.errors[0]


def test_a_level_is_either_a_concurrency_or_a_rate():
    with pytest.raises(ValueError):
        LoadLevel()
    with pytest.raises(ValueError):
        LoadLevel(concurrency=2, request_rate=1.0)
    with pytest.raises(ValueError):
        LoadLevel(concurrency=0)
    assert LoadLevel(request_rate=math.inf).label == "rate inf/s"
