"""The pipeline without HTTP: hooks in order, exactly one post_call, fallbacks, audit."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.unit.gateway.conftest import chat, gateway_client
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.errors import InvalidRequestError, QueueFullError
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.call import Call, Caller
from tokenmill.gateway.fallback import CircuitBreaker, FallbackBackend
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.gateway.policy import Policy
from tokenmill.gateway.router import SingleModelRouter
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.completion import CompletionRequest


class Recorder(Policy):
    def __init__(self, name, log, fail_pre=False):
        self.name, self.log, self.fail_pre = name, log, fail_pre

    async def pre_call(self, ctx):
        self.log.append(f"{self.name}.pre")
        if self.fail_pre:
            raise InvalidRequestError("refused by test")

    def wrap_stream(self, ctx, deltas):
        async def upper():
            async for d in deltas:
                d.text = d.text.upper()
                yield d

        return upper() if self.name == "b" else deltas

    async def post_call(self, ctx):
        status = "error" if ctx.error is not None else "ok"
        self.log.append(f"{self.name}.post:{status}")


def completion_call(prompt="hi", **fields):
    body = CompletionRequest(prompt=prompt, max_tokens=5, **fields)
    return Call.new("completion", body, caller=Caller("k"))


def make_pipeline(engine, policies=()):
    return Pipeline(SingleModelRouter("fake-model", LocalBackend(engine)), policies)


def test_hooks_run_in_order_and_post_call_exactly_once():
    log = []
    pipeline = make_pipeline(FakeEngine(), [Recorder("a", log), Recorder("b", log)])

    async def scenario():
        handle = await pipeline.start(completion_call())
        result = await handle.collect()
        handle.close()  # after the end: a no-op
        await asyncio.sleep(0)
        return result

    result = asyncio.run(scenario())
    assert log == ["a.pre", "b.pre", "a.post:ok", "b.post:ok"]
    assert result.choices[0][0].text == "HELLO"  # b's wrap_stream shaped what was kept
    assert result.usage.completion_tokens == 5 and result.model == "fake-model"


def test_a_refusal_in_pre_call_still_runs_post_call_with_the_error():
    log = []
    engine = FakeEngine()
    pipeline = make_pipeline(engine, [Recorder("a", log, fail_pre=True), Recorder("b", log)])
    with pytest.raises(InvalidRequestError):
        asyncio.run(pipeline.start(completion_call()))
    assert log == ["a.pre", "a.post:error", "b.post:error"] and engine.calls == []


def test_closing_mid_stream_aborts_and_reports_the_call_as_cut():
    log = []
    engine = FakeEngine(step_delay_s=0.01, script="x" * 200)
    pipeline = make_pipeline(engine, [Recorder("a", log)])

    async def scenario():
        body = CompletionRequest(prompt="hi", max_tokens=100)
        handle = await pipeline.start(Call.new("completion", body))
        seen = 0
        async for _ in handle.deltas():
            seen += 1
            if seen == 3:
                break
        handle.close()
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.01)
        return handle

    handle = asyncio.run(scenario())
    assert engine.aborted and log == ["a.pre", "a.post:error"]
    assert handle.result is None


class Failing:
    name = "primary"

    def __init__(self, exc, engine):
        self.exc, self.inner = exc, LocalBackend(engine)

    async def prepare(self, ctx):
        return await self.inner.prepare(ctx)

    async def start(self, ctx, prepared=None):
        raise self.exc


def test_fallback_takes_the_next_target_on_overload_but_not_on_bad_input():
    engine = FakeEngine()
    target = LocalBackend(engine, name="target")
    overloaded = FallbackBackend(Failing(QueueFullError("full"), engine), [target])
    pipeline = Pipeline(SingleModelRouter("fake-model", overloaded))

    async def run(p):
        handle = await p.start(completion_call())
        await handle.collect()
        return handle

    handle = asyncio.run(run(pipeline))
    assert handle.headers["x-tokenmill-served-by"] == "target"
    bad = FallbackBackend(Failing(InvalidRequestError("no"), engine), [target])
    with pytest.raises(InvalidRequestError):
        asyncio.run(run(Pipeline(SingleModelRouter("fake-model", bad))))


def test_the_breaker_opens_after_failures_then_lets_one_probe_through():
    breaker = CircuitBreaker(failures=2, cooldown_s=10)
    breaker.record(False, now=0)
    assert breaker.available(now=0)
    breaker.record(False, now=1)
    assert not breaker.available(now=5) and breaker.available(now=11.5)
    breaker.record(False, now=12)  # the probe failed: open again
    assert not breaker.available(now=13)
    breaker.record(True, now=30)
    assert breaker.available(now=30) and breaker.state == "closed"


def test_the_audit_log_has_one_line_per_request_without_key_or_text(tmp_path):
    log = tmp_path / "audit.jsonl"
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys.alice]\nkey = "sk-secret-alice"\n')
    with gateway_client(FakeEngine(), keys=str(keys), audit_log=str(log)) as c:
        h = {"Authorization": "Bearer sk-secret-alice"}
        c.post("/v1/chat/completions", json=chat("my secret text", temperature=0), headers=h)
        c.post("/v1/chat/completions", json=chat("my secret text", temperature=0), headers=h)
        c.post("/v1/chat/completions", json=chat(n=0), headers=h)  # 400 before the pipeline
        c.post("/v1/chat/completions", json={**chat(), "model": "nope"}, headers=h)
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["status"] for x in lines] == ["ok", "ok", "model_not_found"]
    first, hit, missing = lines
    assert first["key"] == "alice" and first["model"] == "fake-model"
    assert first["cache"] == "miss" and hit["cache"] == "hit"
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] == 5
    assert missing["http_status"] == 404
    raw = log.read_text()
    assert "sk-secret" not in raw and "my secret text" not in raw and "Hello" not in raw


def test_log_prompts_puts_the_text_in_the_audit_log(tmp_path):
    log = tmp_path / "audit.jsonl"
    with gateway_client(FakeEngine(), audit_log=str(log), log_prompts=True) as c:
        c.post("/v1/chat/completions", json=chat("my text"))
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert line["prompt"] == [{"role": "user", "content": "my text"}]
    assert line["output"] == ["Hello"]


def test_transports_need_no_http():
    # What the batch runner and the Kafka worker do: a body and a caller in, a result out.
    pipeline = make_pipeline(FakeEngine())
    body = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    handle = asyncio.run(pipeline.run(Call.new("chat", body, caller=Caller("batch"))))
    assert handle.result.choices[0][0].text == "Hel"
    assert handle.result.choices[0][0].finish_reason == "length"
