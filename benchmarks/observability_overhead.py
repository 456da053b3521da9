"""CPU cost per call of metrics and tracing, measured in thread CPU time so that a busy
machine does not skew it (the machine these were first run on had a load of ~12 on 2
cores, too noisy for `tokenmill bench serve` throughput comparisons).

Variants run interleaved (A, B, A, B, ...) over the same synthetic finished call; each
figure is the median over rounds of CPU microseconds per call:
- metrics policy post_call (tokens, latencies, finish reasons, decisions);
- HTTP status middleware around a trivial ASGI app, against the bare app;
- tracing on (gen_ai call span + 3 phase spans, batched to an exporter that drops them);
- the pipeline's per-policy hook with tracing off (the `tracer is None` branch only).

Usage: python benchmarks/observability_overhead.py [--calls 2000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tokenmill.gateway.call import Call, CallResult, Choice, PromptInfo
from tokenmill.gateway.call_metrics import CallMetricsPolicy
from tokenmill.gateway.call_tracing import CallTracingPolicy
from tokenmill.gateway.policy import CallContext
from tokenmill.gateway.router import Route
from tokenmill.observability.metrics import Metrics
from tokenmill.observability.tracing import Tracing
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.server.http_metrics import HttpMetrics


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def finished_call() -> CallContext:
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=64)
    ctx = CallContext(Call.new("chat", body), body, route=Route("m", "1", None))
    now = time.monotonic()
    ctx.started, ctx.first_output_at = now - 1.0, now - 0.9
    prompt = PromptInfo(list(range(40)), queue_time_s=0.01, scheduled_at=now - 0.95)
    ctx.result = CallResult([prompt], [[Choice(0, "x", list(range(64)), None, "length")]], "m")
    ctx.decisions = {"cache": "miss", "pii": "pass"}
    return ctx


async def per_call_us(fn, calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        await fn()
    return (time.thread_time() - start) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    metrics = Metrics()
    metrics_policy = CallMetricsPolicy(metrics)
    tracing = Tracing(BatchSpanProcessor(DropExporter()))
    tracing_policy = CallTracingPolicy(tracing)
    ctx = finished_call()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    wrapped = HttpMetrics(app, metrics)
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions"}

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        pass

    async def observe():
        await metrics_policy.post_call(ctx)

    async def bare():
        await app(dict(scope), receive, send)

    async def counted():
        await wrapped(dict(scope), receive, send)

    async def traced():
        await tracing_policy.pre_call(ctx)
        await tracing_policy.post_call(ctx)

    async def nothing():
        pass

    variants = {
        "metrics post_call": observe,
        "http bare": bare,
        "http counted": counted,
        "tracing on (4 spans)": traced,
        "empty await": nothing,
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            results[name].append(await per_call_us(fn, calls))
    tracing.shutdown()
    print(f"CPU microseconds per call, median of {rounds} interleaved rounds of {calls} calls")
    for name, values in results.items():
        print(f"  {name:24s} {statistics.median(values):8.1f}  (min {min(values):.1f})")
    http = statistics.median(results["http counted"]) - statistics.median(results["http bare"])
    print(f"  {'http middleware alone':24s} {http:8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
