"""A dead engine thread (issue 14, item 7), on the real model: /health reports it, and
the server either restarts the engine or gives up so that the process exits.

The thread is killed the way a bug would kill it: an exception raised inside it while it
steps (CPython's PyThreadState_SetAsyncExc), not by a hook in the engine.
"""

from __future__ import annotations

import asyncio
import ctypes

import pytest

from tokenmill.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig, ServerConfig
from tokenmill.engine.async_engine import AsyncEngine
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import EngineDeadError
from tokenmill.sampling_params import SamplingParams
from tokenmill.server.state import Phase, ServerState

pytestmark = pytest.mark.slow  # the real model; minutes on a busy machine

BOUND_S = 120.0
"""Longest any wait in these tests may take before it counts as a failure."""


class _Killed(BaseException):
    """Raised inside the engine thread to kill it."""


@pytest.fixture(scope="module")
def engine() -> AsyncEngine:
    config = EngineConfig(
        ModelConfig(dtype="bfloat16", max_model_len=512),
        CacheConfig(memory_gib=0.1),
        SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_queue=4),
    )
    return AsyncEngine.from_config(config)


def _kill(engine: AsyncEngine) -> None:
    thread = engine._thread
    assert thread is not None and thread.ident is not None
    hit = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(_Killed)
    )
    assert hit == 1


def _request(rid: str, max_tokens: int) -> GenerationRequest:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    return GenerationRequest(rid, params, prompt_token_ids=list(range(10, 40)))


async def _collect(engine: AsyncEngine, req: GenerationRequest) -> int:
    tokens = 0
    async for out in engine.generate(req):
        tokens += sum(len(d.token_ids) for d in out.deltas)
    return tokens


async def _kill_while_generating(state: ServerState, engine: AsyncEngine) -> list[str]:
    """Starts a long request, kills the engine thread once it has produced tokens, and
    returns the /health statuses seen until the watchdog acted."""
    restarts = engine.num_restarts
    long = asyncio.ensure_future(_collect(engine, _request("long", 400)))
    while engine.stats().num_running == 0:
        await asyncio.sleep(0.01)
    _kill(engine)
    with pytest.raises(EngineDeadError):
        await asyncio.wait_for(long, BOUND_S)
    seen = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND_S
    while loop.time() < deadline:
        healthy, status = state.health()
        seen.append(status)
        if state.phase is Phase.FAILED or (healthy and engine.num_restarts > restarts):
            break
        await asyncio.sleep(0.01)
    return seen


def _state(engine: AsyncEngine, fatal: list, policy: str) -> ServerState:
    config = ServerConfig(on_engine_failure=policy)
    return ServerState(config, lambda: engine, on_fatal=fatal.append)


def test_dead_engine_is_reported_then_restarted_and_serves_again(engine):
    fatal: list[BaseException] = []
    state = _state(engine, fatal, "restart")

    async def scenario():
        await state.load()
        assert state.health() == (True, "ok")
        before = await _collect(engine, _request("before", 4))
        seen = await _kill_while_generating(state, engine)
        after = await asyncio.wait_for(_collect(engine, _request("after", 4)), BOUND_S)
        health = state.health()
        await state.close()
        return before, seen, after, health

    before, seen, after, health = asyncio.run(scenario())
    assert before == 4 and after == 4
    assert {"engine_dead", "engine_restarting"} & set(seen), seen
    assert health == (True, "ok")
    assert engine.num_restarts == 1
    assert fatal == []


def test_dead_engine_with_exit_policy_fails_health_and_calls_fatal(engine):
    fatal: list[BaseException] = []
    state = _state(engine, fatal, "exit")

    async def scenario():
        await state.load()
        restarts = engine.num_restarts
        seen = await _kill_while_generating(state, engine)
        assert "failed" in seen
        health = state.health()
        await state.close()
        return restarts, health

    restarts, health = asyncio.run(scenario())
    assert health == (False, "failed")
    assert state.engine_died
    assert len(fatal) == 1 and "engine thread died" in str(fatal[0])
    assert engine.num_restarts == restarts  # not restarted
