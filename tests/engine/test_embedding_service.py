"""The embedding service: cross-caller batching, bounded queue, typed errors, lifecycle.

A gate held inside the first forward pass makes batching deterministic: calls made
while it is held must all ride the next pass together.
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from tokenmill.config import EmbeddingConfig
from tokenmill.engine.embedding import EmbeddingService
from tokenmill.errors import (
    ContextLengthError,
    EngineDeadError,
    InvalidRequestError,
    QueueFullError,
    TokenmillError,
)
from tokenmill.model.encoders import SentenceEncoder

pytestmark = pytest.mark.slow

TEXTS = [
    "How do I reset my password?",
    "Write a poem about autumn leaves.",
    "def add(a, b): return a + b",
    "Quelle est la capitale du Japon ?",
    "Summarise the plot of Hamlet in two sentences.",
    "What is the boiling point of water at altitude?",
    "Recommend a book about the history of mathematics.",
    "Why do cats purr?",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder.load()


@pytest.fixture(scope="module")
def expected(encoder):
    return encoder.embed(TEXTS).vectors


class GatedEncoder:
    """The real encoder whose first `encode` waits until `release()`; `fail_next`
    makes the next pass raise."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        self._encoder = encoder
        self.entered = threading.Event()
        self._gate = threading.Event()
        self.fail_next = False

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def release(self) -> None:
        self._gate.set()

    def encode(self, token_ids):
        self.entered.set()
        self._gate.wait(timeout=60)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected failure")
        return self._encoder.encode(token_ids)


def make_service(encoder, **config) -> tuple[EmbeddingService, GatedEncoder]:
    gated = GatedEncoder(encoder)
    service = EmbeddingService(gated, EmbeddingConfig(**config))
    service.start()
    return service, gated


async def hold_worker(service, gated) -> asyncio.Task:
    """Starts a one-input call and returns once the worker is inside its pass."""
    task = asyncio.create_task(service.embed(["the first call holds the worker"]))
    while not gated.entered.is_set():
        await asyncio.sleep(0.005)
    return task


def test_concurrent_async_calls_share_one_pass(encoder, expected):
    service, gated = make_service(encoder)

    async def scenario():
        first = await hold_worker(service, gated)
        calls = [asyncio.create_task(service.embed([t])) for t in TEXTS]
        await asyncio.sleep(0.05)
        assert service.stats().num_queued_inputs == len(TEXTS)
        gated.release()
        await first
        return await asyncio.gather(*calls)

    try:
        results = asyncio.run(scenario())
    finally:
        service.close()
    stats = service.stats()
    assert (stats.num_passes, stats.num_inputs, stats.largest_pass) == (2, 9, 8)
    assert stats.num_queued_inputs == 0
    for result, want in zip(results, expected, strict=True):
        assert result.vectors.shape == (1, 384)
        assert np.abs(result.vectors[0] - want).max() < 1e-5
        assert result.truncated == [False]
    assert results[0].num_tokens == [len(encoder.prepare([TEXTS[0]]).token_ids[0])]


def test_batch_size_bounds_each_pass(encoder, expected):
    service, gated = make_service(encoder, max_batch_size=3)

    async def scenario():
        first = await hold_worker(service, gated)
        calls = [asyncio.create_task(service.embed([t])) for t in TEXTS]
        await asyncio.sleep(0.05)
        gated.release()
        await first
        return await asyncio.gather(*calls)

    try:
        results = asyncio.run(scenario())
    finally:
        service.close()
    stats = service.stats()
    # 1 held + 8 queued in passes of at most 3: 1 + 3 + 3 + 2.
    assert (stats.num_passes, stats.largest_pass) == (4, 3)
    got = np.concatenate([r.vectors for r in results])
    assert np.abs(got - expected).max() < 1e-5


def test_sync_callers_on_threads_batch_with_each_other(encoder, expected):
    service, gated = make_service(encoder)
    out: dict[int, np.ndarray] = {}

    def call(i: int) -> None:
        out[i] = service.embed_sync([TEXTS[i]], timeout=60).vectors[0]

    holder = threading.Thread(target=lambda: service.embed_sync(["hold"], timeout=60))
    holder.start()
    assert gated.entered.wait(30)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(TEXTS))]
    for t in threads:
        t.start()
    while service.stats().num_queued_inputs < len(TEXTS):
        threading.Event().wait(0.005)
    gated.release()
    for t in [holder, *threads]:
        t.join(60)
    service.close()
    assert service.stats().num_passes == 2
    assert np.abs(np.stack([out[i] for i in range(len(TEXTS))]) - expected).max() < 1e-5


def test_full_queue_refuses_with_queue_full_error(encoder):
    service, gated = make_service(encoder, max_queued_inputs=4)

    async def scenario():
        first = await hold_worker(service, gated)
        queued = asyncio.create_task(service.embed(TEXTS[:4]))
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFullError) as info:
            await service.embed(["one too many"])
        assert info.value.status_code == 429 and info.value.code == "queue_full"
        with pytest.raises(InvalidRequestError, match="at most 4"):
            await service.embed(TEXTS[:5])
        gated.release()
        await first
        return await queued

    try:
        result = asyncio.run(scenario())
    finally:
        service.close()
    assert result.vectors.shape == (4, 384)


def test_bad_input_fails_before_queueing(encoder):
    service, gated = make_service(encoder)
    gated.release()
    try:
        with pytest.raises(ContextLengthError) as info:
            asyncio.run(service.embed(["fine", "word " * 300]))
        assert info.value.param == "input" and "input[1]" in info.value.message
        with pytest.raises(InvalidRequestError, match="outside|vocabulary"):
            asyncio.run(service.embed([[101, 10**6]]))
        assert service.stats().num_passes == 0
        long = asyncio.run(service.embed(["word " * 300], truncate=True))
        assert long.truncated == [True] and long.num_tokens == [256]
        assert asyncio.run(service.embed([])).vectors.shape == (0, 384)
    finally:
        service.close()


def test_cancelled_call_is_withdrawn_before_its_pass(encoder):
    service, gated = make_service(encoder)

    async def scenario():
        first = await hold_worker(service, gated)
        doomed = asyncio.create_task(service.embed(TEXTS[:3]))
        kept = asyncio.create_task(service.embed(TEXTS[3:4]))
        await asyncio.sleep(0.02)
        doomed.cancel()
        await asyncio.sleep(0.02)
        gated.release()
        await first
        return await kept

    try:
        asyncio.run(scenario())
    finally:
        service.close()
    assert service.stats().num_inputs == 2  # the holder and `kept`, not the three withdrawn


def test_failed_pass_fails_its_callers_and_service_goes_on(encoder):
    service, gated = make_service(encoder)
    gated.fail_next = True
    gated.release()
    try:
        with pytest.raises(TokenmillError, match="injected failure"):
            service.embed_sync(["boom"], timeout=60)
        assert service.embed_sync(["still alive"], timeout=60).vectors.shape == (1, 384)
    finally:
        service.close()


def test_close_fails_queued_calls_and_refuses_new_ones(encoder):
    service, gated = make_service(encoder)

    async def scenario():
        first = await hold_worker(service, gated)
        queued = asyncio.create_task(service.embed(["never run"]))
        await asyncio.sleep(0.02)
        closer = asyncio.get_running_loop().run_in_executor(None, service.close)
        await asyncio.sleep(0.02)
        gated.release()
        await closer
        await first  # the pass in progress completes
        with pytest.raises(EngineDeadError):
            await queued
        with pytest.raises(EngineDeadError):
            await service.embed(["after close"])

    asyncio.run(scenario())
