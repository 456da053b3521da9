"""The asyncio engine: streaming deltas, abort mid-stream, admission errors."""

import asyncio

import pytest

from tokenmill.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import ContextLengthError, QueueFullError
from tokenmill.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def engine():
    config = EngineConfig(
        ModelConfig(dtype="bfloat16", max_model_len=1024),
        CacheConfig(memory_gib=0.1),
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_queue=2),
    )
    return AsyncEngine.from_config(config)


def run(engine, coro_fn):
    async def main():
        await engine.start(warmup=False)
        try:
            return await coro_fn()
        finally:
            await engine.shutdown(grace_s=1.0)

    return asyncio.run(main())


def idle(stats) -> bool:
    return stats.num_running == 0 and stats.num_waiting == 0 and stats.kv_blocks_used == 0


def test_stream_then_abort_then_errors(engine):
    async def scenario():
        # 1. Streaming deltas add up to the final text and token ids.
        params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
        texts, ids, last = [], [], None
        async for out in engine.generate(
            GenerationRequest("s1", params, prompt="Tell me about the sea.")
        ):
            for d in out.deltas:
                texts.append(d.text)
                ids.extend(d.token_ids)
            last = out
        assert last.finished and last.outputs[0].finish_reason == "length"
        assert "".join(texts) == last.outputs[0].text
        assert ids == last.outputs[0].token_ids and len(ids) == 16

        # 2. Leaving the stream early aborts the request and frees its blocks.
        long = SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True)
        agen = engine.generate(
            GenerationRequest("s2", long, prompt="Count slowly to one thousand.")
        )
        seen = 0
        async for out in agen:
            seen += 1
            if seen == 3:
                break
        await agen.aclose()
        for _ in range(200):
            if idle(engine.stats()):
                break
            await asyncio.sleep(0.05)
        assert idle(engine.stats()), engine.stats()

        # 3. abort() from outside ends the stream with finish_reason "abort".
        reasons = []

        async def consume():
            async for out in engine.generate(GenerationRequest("s3", long, prompt="Go on and on.")):
                reasons.extend(d.finish_reason for d in out.deltas)

        task = asyncio.create_task(consume())
        deadline = asyncio.get_running_loop().time() + 60
        while not reasons:
            assert not task.done(), f"s3 ended before its first output: {task}"
            assert asyncio.get_running_loop().time() < deadline, "no output from s3 in 60 s"
            await asyncio.sleep(0.01)
        await engine.abort("s3")
        await asyncio.wait_for(task, 30)
        assert reasons[-1] == "abort"

        # 4. Admission errors arrive at the first iteration.
        with pytest.raises(ContextLengthError, match="1024"):
            async for _ in engine.generate(
                GenerationRequest("s4", long.clone(max_tokens=1000), prompt="word " * 100)
            ):
                pass
        return True

    assert run(engine, scenario)


def test_queue_full_is_refused(engine):
    async def scenario():
        params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
        # Four may run and two wait. However the worker's steps interleave with the
        # arrivals, a step only moves requests from waiting to running (none can finish
        # 40 tokens meanwhile), so the first six are taken and the last two refused.
        gens = [
            engine.generate(GenerationRequest(f"q{i}", params, prompt="Hello there"))
            for i in range(8)
        ]
        first = [asyncio.ensure_future(g.__anext__()) for g in gens]
        done = await asyncio.gather(*first, return_exceptions=True)
        errors = [d for d in done if isinstance(d, QueueFullError)]
        assert len(errors) == 2, done
        assert all("busy" in str(e) for e in errors)
        assert all(isinstance(d, QueueFullError) for d in done[6:])
        for g in gens:
            await g.aclose()
        return True

    assert run(engine, scenario)
