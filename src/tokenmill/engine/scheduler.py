"""Continuous batching under a token budget, in the style of vLLM v1.

There are no prefill and decode phases: every step, each scheduled request gets up
to `num_tokens - num_computed_tokens` tokens of the budget. Running requests go
first (so decodes never starve behind a long prompt), then waiting ones are admitted
by (priority, arrival) while the budget, the sequence limit and the KV pool allow.
A long prompt is chunked across steps and shares each step with the decodes.
When the pool runs dry, the lowest-priority, latest running request is preempted:
its blocks are freed and it later recomputes from scratch (prefix caching makes
that cheap).
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

from tokenmill.config import SchedulerConfig
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.request import Request, RequestStatus


@dataclass
class ScheduledRequest:
    """One request's share of a step."""

    request: Request
    num_new_tokens: int
    """Tokens computed this step, starting at request.num_computed_tokens."""
    block_ids: list[int]


@dataclass
class SchedulerOutput:
    """What the model runner computes in one step."""

    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class Scheduler:
    """Owns the waiting heap and the running list; mutates request status and
    num_computed_tokens (in `update_after_step`), and the KV manager's block tables."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
        self._waiting: list[tuple[tuple[int, int], Request]] = []
        self.running: list[Request] = []
        # Sequences finished while queued stay in the heap until they reach its top;
        # they are told apart by status, not id (a new request may reuse the id).
        self._num_finished_waiting = 0
        self.num_preemptions = 0

    @property
    def num_waiting(self) -> int:
        return len(self._waiting) - self._num_finished_waiting

    def add(self, request: Request) -> None:
        """Queue a request. Admission limits are the engine's concern."""
        request.status = RequestStatus.WAITING
        heapq.heappush(self._waiting, (request.sort_key, request))

    def has_unfinished(self) -> bool:
        return bool(self.running) or self.num_waiting > 0

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work. Takes KV blocks for everything it schedules."""
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        scheduled_ids: set[str] = set()

        # Running requests, highest priority first, so preemption takes from the tail.
        self.running.sort(key=lambda r: r.sort_key)
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed_tokens, budget)
            if n <= 0:
                i += 1
                continue
            while not self.kv.allocate_slots(req, n):
                victim = self.running.pop()
                self._preempt(victim, out)
                if victim is req:
                    break
            else:
                out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
                scheduled_ids.add(req.request_id)
                budget -= n
                i += 1
                continue
            break  # the request itself was preempted: nothing behind it remains

        if out.preempted:
            return out  # the pool is short: admit nobody this step

        while self._waiting and budget > 0 and len(self.running) < self.config.max_num_seqs:
            _, req = self._waiting[0]
            if req.is_finished:
                heapq.heappop(self._waiting)
                self._num_finished_waiting -= 1
                continue
            prefix = self.kv.match_prefix(req)
            n = min(req.num_tokens - prefix.num_tokens, budget)
            if not self.kv.allocate_slots(req, n, prefix):
                break
            heapq.heappop(self._waiting)
            if req.num_preemptions == 0:
                req.num_cached_tokens = prefix.num_tokens
                req.first_scheduled_time = time.monotonic()
            req.num_computed_tokens = prefix.num_tokens
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
            budget -= n
        return out

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.kv.free(req)
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.num_preemptions += 1
        heapq.heappush(self._waiting, (req.sort_key, req))
        out.preempted.append(req)
        out.scheduled = [s for s in out.scheduled if s.request is not req]

    def update_after_step(self, out: SchedulerOutput) -> None:
        """Advance computed counters and register newly full blocks for reuse."""
        for s in out.scheduled:
            s.request.num_computed_tokens += s.num_new_tokens
            self.kv.cache_full_blocks(s.request)

    def finish(self, req: Request, status: RequestStatus) -> None:
        """End a request wherever it is, freeing its blocks."""
        was_finished = req.is_finished
        req.status = status
        if req in self.running:
            self.running.remove(req)
            self.kv.free(req)
        elif not was_finished and any(r is req for _, r in self._waiting):
            self._num_finished_waiting += 1
            self.kv.free(req)
