"""The drift policy: each finished call's features go to the drift monitor, off the
request's critical path.

`post_call` only appends a record to a bounded queue. A background task takes the
queue in batches, embeds the prompts with the sentence encoder (its own thread, one
batched pass for many prompts), feeds the monitor, and checks once per window of new
observations (the monitor's permutation tests run on a worker thread), so the warning
line and the gauges follow the traffic without anyone polling the endpoint.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass

from tokenmill.gateway.call import CallResult
from tokenmill.gateway.guard_injection import user_texts
from tokenmill.gateway.policy import CallContext, Policy
from tokenmill.observability.drift import DriftMonitor, DriftRecord, DriftReport, observe

logger = logging.getLogger(__name__)
MAX_QUEUED = 4096
BATCH = 64


@dataclass
class DriftFeedStats:
    """What the feed did, shown next to the monitor's report."""

    queued: int = 0
    observed: int = 0
    dropped: int = 0
    """Records refused because the queue was full (the encoder could not keep up)."""
    failed: int = 0
    """Records lost to an embedding error (logged)."""


class DriftPolicy(Policy):
    """Feeds `monitor`; mutates the queue, its stats and (via `on_report`) gauges."""

    name = "drift"
    spanned = False

    def __init__(
        self,
        monitor: DriftMonitor,
        embedder=None,
        on_report: Callable[[DriftReport], None] | None = None,
    ):
        """embedder: an object with `async embed_texts(texts) -> vectors`, or None to
        leave the embedding signal out. on_report: called with each new report."""
        self.monitor = monitor
        self.embedder = embedder
        self.on_report = on_report
        self.stats = DriftFeedStats()
        self._queue: collections.deque[DriftRecord] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._since_check = 0

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.error is not None or ctx.result is None or ctx.decisions.get("cache") == "hit":
            return
        record = _record(ctx.call.kind, ctx.body, ctx.result)
        if record is None:
            return
        if len(self._queue) >= MAX_QUEUED:
            self.stats.dropped += 1
            if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
                logger.warning("drift feed is behind: %d records dropped", self.stats.dropped)
            return
        self._queue.append(record)
        self.stats.queued += 1
        self._ensure_worker()
        self._wake.set()

    async def report(self) -> DriftReport:
        """The monitor's verdict now (its tests run on a worker thread)."""
        report = await asyncio.to_thread(self.monitor.check)
        if self.on_report is not None:
            self.on_report(report)
        return report

    async def drain(self) -> None:
        """Waits until every queued record is observed (tests, shutdown)."""
        while self._queue or (self._wake is not None and self._busy):
            await asyncio.sleep(0.01)

    def _ensure_worker(self) -> None:
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._busy = False
            self._task = asyncio.ensure_future(self._work())

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                self._busy = True
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                try:
                    await self._observe(batch)
                except Exception:
                    self.stats.failed += len(batch)
                    logger.exception("drift feed could not observe %d records", len(batch))
                self._busy = False

    async def _observe(self, batch: list[DriftRecord]) -> None:
        vectors = [None] * len(batch)
        if self.embedder is not None:
            vectors = list(await self.embedder.embed_texts([r.prompt for r in batch]))
        for record, vector in zip(batch, vectors, strict=True):
            self.monitor.observe(observe(record, vector))
        self.stats.observed += len(batch)
        self._since_check += len(batch)
        if (
            self.monitor.profile is not None
            and self._since_check >= self.monitor.config.window_size
        ):
            self._since_check = 0
            await self.report()


def _record(kind: str, body, result: CallResult) -> DriftRecord | None:
    """The first choice of the first prompt as a drift record (None without a prompt)."""
    texts = user_texts(kind, body)
    if not texts or not result.choices or not result.choices[0]:
        return None
    choice = result.choices[0][0]
    return DriftRecord(
        prompt="\n".join(texts),
        output=choice.text,
        output_tokens=len(choice.token_ids),
        finish_reason=choice.finish_reason,
        mean_logprob=_mean_logprob(choice.token_ids, choice.logprobs),
    )


def _mean_logprob(token_ids: list[int], logprobs) -> float | None:
    """The mean log-probability of the chosen tokens, when the call asked for logprobs."""
    if not logprobs:
        return None
    values = [pos[t].logprob for t, pos in zip(token_ids, logprobs) if pos and t in pos]
    return sum(values) / len(values) if values else None
