"""No per-request state outlives its request, however it ends (issue 14's soak: the
candidates for its memory growth included state left behind by cancelled requests).

These reach into the engine's private maps on purpose: they are what would grow.
"""

from __future__ import annotations

import asyncio

from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.engine.request import GenerationRequest
from tokenmill.sampling_params import SamplingParams

from .factories import make_core, run_core


def assert_no_request_state(core) -> None:
    assert core._children == {}
    assert core.outputs.parents == {}
    assert not core.has_unfinished()
    assert core.scheduler.num_waiting == 0 and core.scheduler.running == []
    assert core.stats().kv_blocks_used == 0


def test_aborted_finished_and_stopped_requests_leave_nothing_behind():
    core = make_core("abcdefgh", num_blocks=128, max_seqs=8)
    ended = 0
    for round_ in range(40):
        kinds = {
            f"len-{round_}": SamplingParams(temperature=0.0, max_tokens=6, n=2),
            f"stop-{round_}": SamplingParams(temperature=0.0, max_tokens=30, stop=["e"]),
            f"mid-{round_}": SamplingParams(temperature=0.0, max_tokens=30, n=3),
            f"early-{round_}": SamplingParams(temperature=0.0, max_tokens=30),
        }
        for rid, params in kinds.items():
            core.add_request(GenerationRequest(rid, params, prompt="a" * (1 + round_ % 7)))
        assert core.abort(f"early-{round_}")  # before it was ever scheduled
        for _ in range(3):
            core.step()
        assert f"mid-{round_}" in core._children
        core.abort(f"mid-{round_}")  # mid-stream, its 3 sequences running
        ended += len(run_core(core)) + 2
    assert ended == 160
    assert_no_request_state(core)


def test_async_engine_forgets_a_stream_its_client_left():
    async def scenario() -> AsyncEngine:
        engine = AsyncEngine(make_core("abcd", num_blocks=64))
        await engine.start(warmup=False)
        params = SamplingParams(temperature=0.0, max_tokens=40, n=2, ignore_eos=True)
        for i in range(30):
            stream = engine.generate(GenerationRequest(f"r{i}", params, prompt="a"))
            async for _ in stream:
                break  # the client hangs up after its first chunk
            await stream.aclose()
        for _ in range(200):  # the aborts are applied on the engine thread
            if not engine.core.has_unfinished() and not engine.core._children:
                break
            await asyncio.sleep(0.01)
        await engine.shutdown(grace_s=1.0)
        return engine

    engine = asyncio.run(scenario())
    assert engine._queues == {}
    assert_no_request_state(engine.core)
