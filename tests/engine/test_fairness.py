"""Fair scheduling on the real model (issue 14, item 3): one caller's huge request, which
would hold every batch slot, does not keep another caller's small request waiting for
it to end. Order is asserted, not time."""

from __future__ import annotations

import asyncio

import pytest

from tokenmill.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.engine.request import GenerationRequest
from tokenmill.sampling_params import SamplingParams

pytestmark = pytest.mark.slow
BOUND_S = 900.0


@pytest.fixture(scope="module")
def engine() -> AsyncEngine:
    config = EngineConfig(
        ModelConfig(dtype="bfloat16", max_model_len=512),
        CacheConfig(memory_gib=0.2),
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_queue=8),
    )
    return AsyncEngine.from_config(config)


def test_small_request_of_another_caller_finishes_while_a_huge_one_runs(engine):
    huge_params = SamplingParams(n=4, max_tokens=120, temperature=0.0, ignore_eos=True)
    small_params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    huge = GenerationRequest("huge", huge_params, prompt_token_ids=list(range(10, 40)), caller="a")
    small = GenerationRequest(
        "small", small_params, prompt_token_ids=list(range(50, 70)), caller="b"
    )
    order: list[str] = []

    async def collect(req: GenerationRequest) -> list[int]:
        async for out in engine.generate(req):
            if out.finished:
                order.append(req.request_id)
                return [len(c.token_ids) for c in out.outputs]
        return []

    async def scenario():
        await engine.start(warmup=False)
        try:
            big = asyncio.ensure_future(collect(huge))
            while engine.stats().num_running < 4:  # the huge one holds every slot
                await asyncio.sleep(0.01)
            small_lengths = await asyncio.wait_for(collect(small), BOUND_S)
            huge_running = not big.done()
            huge_lengths = await asyncio.wait_for(big, BOUND_S)
            return small_lengths, huge_running, huge_lengths
        finally:
            await engine.shutdown(grace_s=1.0)

    small_lengths, huge_running, huge_lengths = asyncio.run(scenario())
    assert small_lengths == [4]
    assert huge_running and order == ["small", "huge"]
    assert huge_lengths == [120] * 4  # the preempted sequence was resumed, not dropped
    assert engine.core.scheduler.num_fairness_preemptions >= 1
