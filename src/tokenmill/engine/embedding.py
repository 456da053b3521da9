"""The embedding service: concurrent callers' inputs batched into shared forward passes.

One worker thread owns the SentenceEncoder and runs every forward pass, as the
generation engine's thread owns its model. Callers tokenize and check their inputs
themselves (errors surface at once, before anything is queued), then hand complete
token sequences to the worker. Whenever the worker finishes a pass it takes everything
that queued meanwhile, up to `max_batch_size` inputs, into the next one: batching
without an artificial wait, so a lone caller pays only its own pass.

The async API (`embed`) serves the HTTP endpoint; the sync API (`embed_sync`) serves
the semantic cache and the drift profile builder from threads other than the event
loop. Both share the worker, so their inputs batch together.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from tokenmill.config import EmbeddingConfig
from tokenmill.errors import EngineDeadError, InvalidRequestError, QueueFullError, TokenmillError
from tokenmill.model.encoders import EmbeddingInput, EmbeddingResult, SentenceEncoder

log = logging.getLogger(__name__)

# Above this many characters a call tokenizes on a helper thread, not the event loop.
_INLINE_TOKENIZE_CHARS = 50_000


@dataclass
class _Job:
    token_ids: list[list[int]]
    future: Future
    """Resolves to the job's (N, dim) float32 vectors."""


@dataclass(frozen=True)
class EmbeddingStats:
    """Counters since start, for tests and the metrics endpoint."""

    num_passes: int
    """Batches the worker ran (each may be several padded micro-batches)."""
    num_inputs: int
    """Inputs embedded."""
    largest_pass: int
    """Most inputs in one batch."""
    num_queued_inputs: int
    """Inputs waiting for the worker now."""


class EmbeddingService:
    """Async and sync embedding over one worker thread. `start()` before use,
    `close()` after."""

    def __init__(self, encoder: SentenceEncoder, config: EmbeddingConfig | None = None) -> None:
        self.encoder = encoder
        self.config = config or EmbeddingConfig()
        self.model_name = encoder.name
        self.dim = encoder.dim
        self._jobs: collections.deque[_Job] = collections.deque()
        self._queued_inputs = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._num_passes = self._num_inputs = self._largest_pass = 0

    @classmethod
    def from_config(cls, config: EmbeddingConfig) -> EmbeddingService:
        """Loads the encoder (blocking). Raises ModelNotFoundError, InvalidRequestError."""
        encoder = SentenceEncoder.load(
            config.model,
            max_batch_size=config.max_batch_size,
            max_batch_tokens=config.max_batch_tokens,
        )
        return cls(encoder, config)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Starts the worker thread; a no-op when it runs already."""
        with self._cond:
            if self._thread is not None:
                return
            self._closing = False
            self._thread = threading.Thread(
                target=self._run, name="tokenmill-embedding", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stops the worker after its current pass; calls still queued fail with
        EngineDeadError. Later calls fail too until `start()`."""
        with self._cond:
            self._closing = True
            dropped = list(self._jobs)
            self._jobs.clear()
            self._queued_inputs = 0
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        for job in dropped:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(EngineDeadError("The embedding service was closed."))
        if thread is not None:
            thread.join()

    # -- calls ---------------------------------------------------------------------------

    async def embed(
        self, inputs: Sequence[EmbeddingInput], truncate: bool = False
    ) -> EmbeddingResult:
        """Embeds texts or token-id lists (see EmbeddingInput), batched with other
        callers. Raises InvalidRequestError / ContextLengthError for bad input (nothing
        queued), QueueFullError when `max_queued_inputs` would be exceeded,
        EngineDeadError when the service is closed. Cancelling the await withdraws the
        call if its pass has not started."""
        if sum(len(x) for x in inputs if isinstance(x, str)) > _INLINE_TOKENIZE_CHARS:
            prepared = await asyncio.to_thread(self.encoder.prepare, inputs, truncate)
        else:
            prepared = self.encoder.prepare(inputs, truncate)
        future = self._submit(prepared.token_ids)
        vectors = await asyncio.wrap_future(future)
        return EmbeddingResult(vectors, [len(s) for s in prepared.token_ids], prepared.truncated)

    async def embed_prepared(self, token_ids: list[list[int]]) -> np.ndarray:
        """Embeds sequences the encoder's `prepare` made ([CLS]/[SEP] included), batched
        with other callers: the gateway prepares once (usage, rate limits) and embeds
        that. Raises as `embed` does after its preparation."""
        return await asyncio.wrap_future(self._submit(token_ids))

    def embed_sync(
        self,
        inputs: Sequence[EmbeddingInput],
        truncate: bool = False,
        timeout: float | None = None,
    ) -> EmbeddingResult:
        """As `embed`, blocking the calling thread (never call it on the event loop: it
        would stall every other request). TimeoutError after `timeout` seconds; the call
        is then withdrawn if its pass has not started."""
        prepared = self.encoder.prepare(inputs, truncate)
        future = self._submit(prepared.token_ids)
        try:
            vectors = future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise
        return EmbeddingResult(vectors, [len(s) for s in prepared.token_ids], prepared.truncated)

    def stats(self) -> EmbeddingStats:
        """A snapshot of the counters; mutates nothing."""
        with self._cond:
            return EmbeddingStats(
                self._num_passes, self._num_inputs, self._largest_pass, self._queued_inputs
            )

    # -- worker --------------------------------------------------------------------------

    def _submit(self, token_ids: list[list[int]]) -> Future:
        """Queues a job; raises before queueing anything when it cannot be accepted."""
        future: Future = Future()
        if not token_ids:
            future.set_result(np.empty((0, self.dim), dtype=np.float32))
            return future
        limit = self.config.max_queued_inputs
        if len(token_ids) > limit:
            raise InvalidRequestError(
                f"{len(token_ids)} inputs in one call; the embedding service takes at most "
                f"{limit}. Split the call.",
                param="input",
            )
        with self._cond:
            if self._thread is None or self._closing:
                raise EngineDeadError("The embedding service is not running.")
            if self._queued_inputs + len(token_ids) > limit:
                raise QueueFullError(
                    f"The embedding queue is full ({self._queued_inputs} inputs waiting, "
                    f"limit {limit}); retry shortly."
                )
            self._jobs.append(_Job(token_ids, future))
            self._queued_inputs += len(token_ids)
            self._cond.notify()
        return future

    def _take(self) -> list[_Job] | None:
        """Blocks for work, then takes queued jobs in order while they fit in
        `max_batch_size` inputs (always at least one). None when closing."""
        with self._cond:
            while not self._jobs and not self._closing:
                self._cond.wait()
            if self._closing:
                return None
            jobs = [self._jobs.popleft()]
            size = len(jobs[0].token_ids)
            while self._jobs and size + len(self._jobs[0].token_ids) <= self.config.max_batch_size:
                size += len(self._jobs[0].token_ids)
                jobs.append(self._jobs.popleft())
            self._queued_inputs -= size
            return jobs

    def _run(self) -> None:
        while (jobs := self._take()) is not None:
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not live:
                continue
            seqs = [s for j in live for s in j.token_ids]
            try:
                vectors = self.encoder.encode(seqs)
            except Exception as exc:  # one bad pass must not stop the service
                log.exception("embedding pass failed")
                error = TokenmillError(f"The embedding pass failed: {exc}")
                for job in live:
                    job.future.set_exception(error)
                continue
            with self._cond:
                self._num_passes += 1
                self._num_inputs += len(seqs)
                self._largest_pass = max(self._largest_pass, len(seqs))
            start = 0
            for job in live:
                end = start + len(job.token_ids)
                job.future.set_result(vectors[start:end])
                start = end
