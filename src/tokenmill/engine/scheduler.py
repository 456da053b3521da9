"""Continuous batching under a token budget, in the style of vLLM v1, with fair shares.

There are no prefill and decode phases: every step, each scheduled request gets up
to `num_tokens - num_computed_tokens` tokens of the budget. Running sequences go
first (so decodes never starve behind a long prompt), then waiting ones are admitted
while the budget, the sequence limit and the KV pool allow. A long prompt is chunked
across steps and shares each step with the decodes.

Batch slots are shared fairly, in the order of a *fair key* (lower is served first):
`(priority, caller rank, request rank, arrival)`. A sequence's caller rank counts the sequences of
the same caller (API key) ahead of it, when the caller's sequences are dealt round-
robin between its requests: every request's first sequence, then every second one,
and so on (a sequence's request rank says which round it is in). So a caller's k-th slot competes with every other caller's k-th slot, and
inside a caller a request's first sequence beats another request's second.

- Waiting sequences are admitted in fair-key order (the key a sequence would have
  once running).
- When every slot is taken and a waiting sequence's key is strictly below the worst
  running one's, that one is preempted to make room. A request with n=64 therefore
  gives up a slot to a newcomer within a step instead of holding all of them until it
  ends. The strict comparison means the swap cannot be undone by the next step.
- When the KV pool runs dry, the worst-keyed running sequence is preempted: its blocks
  are freed and it later recomputes from scratch (prefix caching makes that cheap).
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from tokenmill.config import SchedulerConfig
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.request import Request, RequestStatus

FairKey = tuple[int, int, int, int]
MAX_FAIRNESS_PREEMPTIONS_PER_STEP = 4
"""Sequences preempted per step to make room for fairer ones; bounds the work one
step can throw away (the rest follow in later steps)."""


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


class _Shares:
    """Who holds the running slots: per request (parent) a count, per caller the sorted
    (request rank, arrival) of its sequences. Rebuilt from the running list; updated
    in place as sequences are admitted."""

    def __init__(self, running: list[Request]):
        self.per_parent: dict[str, int] = {}
        self.per_caller: dict[str, list[tuple[int, int]]] = {}
        for req in sorted(running, key=lambda r: r.arrival_seq):
            self.add(req)

    def add(self, req: Request) -> tuple[int, int]:
        """Count `req` as running; returns its (request rank, arrival)."""
        rank = self.per_parent.get(req.parent_id, 0)
        self.per_parent[req.parent_id] = rank + 1
        entry = (rank, req.arrival_seq)
        bisect.insort(self.per_caller.setdefault(req.caller, []), entry)
        return entry

    def key_if_admitted(self, req: Request) -> FairKey:
        """The fair key `req` would have if it started running now."""
        entry = (self.per_parent.get(req.parent_id, 0), req.arrival_seq)
        rank = bisect.bisect_left(self.per_caller.get(req.caller, []), entry)
        return (req.priority, rank, *entry)


class Scheduler:
    """Owns the waiting sequences and the running list; mutates request status and
    num_computed_tokens (in `update_after_step`), and the KV manager's block tables."""

    def __init__(self, config: SchedulerConfig, kv: KVCacheManager):
        self.config = config
        self.kv = kv
        self._waiting: dict[str, list[Request]] = {}
        """Per request (parent id), its waiting sequences in arrival order."""
        self._num_waiting = 0
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.num_fairness_preemptions = 0
        """Of num_preemptions, those made to give a slot to a fairer sequence."""

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    def add(self, request: Request) -> None:
        """Queue a sequence. Admission limits are the engine's concern."""
        request.status = RequestStatus.WAITING
        self._enqueue(request)

    def adopt(self, request: Request) -> None:
        """Add a sequence that already holds its KV blocks (a forked beam) straight to
        the running list; it is not counted against admission this step."""
        request.status = RequestStatus.RUNNING
        self.running.append(request)

    def park(self, request: Request) -> None:
        """Take a running sequence out of the batch and free its blocks without queueing
        it: the caller `add`s it back when it should run again, and it then recomputes
        (the prefix cache serves its full blocks). Counts as a preemption."""
        self.running = [r for r in self.running if r is not request]
        self.kv.free(request)
        request.num_computed_tokens = 0
        request.status = RequestStatus.PREEMPTED
        request.num_preemptions += 1
        self.num_preemptions += 1

    def _enqueue(self, request: Request) -> None:
        queue = self._waiting.setdefault(request.parent_id, [])
        bisect.insort(queue, request, key=lambda r: r.arrival_seq)
        self._num_waiting += 1

    def has_unfinished(self) -> bool:
        return bool(self.running) or self._num_waiting > 0

    def fair_order(self) -> list[Request]:
        """The running sequences sorted by fair key, most deserving first. Does not
        modify anything."""
        return [req for _, req in self._ranked()]

    def _ranked(self) -> list[tuple[FairKey, Request]]:
        per_parent: dict[str, int] = {}
        per_caller: dict[str, list[tuple[int, int, Request]]] = {}
        for req in sorted(self.running, key=lambda r: r.arrival_seq):
            rank = per_parent.get(req.parent_id, 0)
            per_parent[req.parent_id] = rank + 1
            per_caller.setdefault(req.caller, []).append((rank, req.arrival_seq, req))
        keyed = []
        for entries in per_caller.values():
            entries.sort(key=lambda e: (e[0], e[1]))
            for caller_rank, (rank, arrival, req) in enumerate(entries):
                keyed.append(((req.priority, caller_rank, rank, arrival), req))
        keyed.sort(key=lambda kr: kr[0])
        return keyed

    def _best_waiting(self, shares: _Shares) -> tuple[FairKey, Request] | None:
        best: tuple[FairKey, Request] | None = None
        for queue in self._waiting.values():
            key = shares.key_if_admitted(queue[0])
            if best is None or key < best[0]:
                best = (key, queue[0])
        return best

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work. Takes KV blocks for everything it schedules; may
        preempt running sequences (listed in the output) for the pool or for fairness."""
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        ranked = self._ranked()
        self.running = [req for _, req in ranked]
        keys = {id(req): key for key, req in ranked}
        granted: dict[int, int] = {}

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            drafts = req.draft_token_ids
            n = min(req.num_tokens + len(drafts) - req.num_computed_tokens, budget)
            if drafts and n < 1 + len(drafts):
                del drafts[max(0, n - 1) :]  # verify only the drafts the budget covers
            if n <= 0:
                i += 1
                continue
            while not self.kv.allocate_slots(req, n):
                if drafts:  # drafts are optional: drop them before preempting anyone
                    del drafts[:]
                    n = min(req.num_tokens - req.num_computed_tokens, budget)
                    continue
                victim = self.running.pop()
                self._preempt(victim, out)
                if victim is req:
                    break
            else:
                out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
                granted[id(req)] = n
                budget -= n
                i += 1
                continue
            break  # the request itself was preempted: nothing behind it remains

        if out.preempted:
            return out  # the pool is short: admit nobody this step

        shares = _Shares(self.running)
        fairness_left = MAX_FAIRNESS_PREEMPTIONS_PER_STEP
        while self._num_waiting and budget > 0:
            best = self._best_waiting(shares)
            assert best is not None
            key, req = best
            if len(self.running) >= self.config.max_num_seqs:
                if not fairness_left or not self.running:
                    break
                worst = max(self.running, key=lambda r: keys[id(r)])
                if not key < keys[id(worst)]:
                    break
                self.running.remove(worst)
                budget += granted.pop(id(worst), 0)
                self._preempt(worst, out)
                self.num_fairness_preemptions += 1
                fairness_left -= 1
                shares = _Shares(self.running)
                key = shares.key_if_admitted(req)
            prefix = self.kv.match_prefix(req)
            n = min(req.num_tokens - prefix.num_tokens, budget)
            if not self.kv.allocate_slots(req, n, prefix):
                break
            self._dequeue(req)
            if req.num_preemptions == 0:
                req.num_cached_tokens = prefix.num_tokens
                req.first_scheduled_time = time.monotonic()
            req.num_computed_tokens = prefix.num_tokens
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            shares.add(req)
            keys[id(req)] = key
            out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
            granted[id(req)] = n
            budget -= n
        return out

    def _dequeue(self, req: Request) -> bool:
        """Remove `req` from the waiting sequences; False if it was not there."""
        queue = self._waiting.get(req.parent_id)
        if not queue:
            return False
        for i, other in enumerate(queue):
            if other is req:
                del queue[i]
                self._num_waiting -= 1
                if not queue:
                    del self._waiting[req.parent_id]
                return True
        return False

    def _preempt(self, req: Request, out: SchedulerOutput) -> None:
        self.kv.free(req)
        if req.spec is not None:
            req.spec.draft_token_ids = []
        req.num_computed_tokens = 0
        req.status = RequestStatus.PREEMPTED
        req.num_preemptions += 1
        self.num_preemptions += 1
        self._enqueue(req)
        out.preempted.append(req)
        out.scheduled = [s for s in out.scheduled if s.request is not req]

    def update_after_step(self, out: SchedulerOutput) -> None:
        """Advance computed counters and register newly full blocks for reuse."""
        for s in out.scheduled:
            s.request.num_computed_tokens += s.num_new_tokens
            self.kv.cache_full_blocks(s.request)

    def reject_drafts(self, req: Request, num_rejected: int) -> None:
        """Forget the KV of a sequence's last `num_rejected` computed positions (drafts
        the model did not accept): lowers num_computed_tokens and frees the blocks its
        tokens no longer reach. Their slots are overwritten when the sequence gets there."""
        if num_rejected <= 0:
            return
        req.num_computed_tokens -= num_rejected
        self.kv.truncate(req, req.num_tokens)

    def finish(self, req: Request, status: RequestStatus) -> None:
        """End a sequence wherever it is, freeing its blocks."""
        was_finished = req.is_finished
        req.status = status
        for i, other in enumerate(self.running):
            if other is req:
                del self.running[i]
                self.kv.free(req)
                return
        if not was_finished and self._dequeue(req):
            self.kv.free(req)
