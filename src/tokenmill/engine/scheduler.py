"""Continuous batching under a token budget, in the style of vLLM v1, with fair shares.

There are no prefill and decode phases: every step, each scheduled request gets up
to `num_tokens - num_computed_tokens` tokens of the budget. Running decodes go first
(so they never starve behind a long prompt), then waiting sequences are admitted while
the budget, the sequence limit and the KV pool allow, then running prompts take their
next chunk from what is left. While the engine holds more than one sequence, the prompt
tokens of a step are capped (`max_prefill_tokens_when_busy`), so a step stays short: a
stream's next token, and a newly arrived short prompt's first, wait for one short step
rather than for a long prompt's chunk or a burst of prompts (issue 14's small-request
TTFT under load); a lone request still prefills in max_num_batched_tokens chunks. A
newly arrived prompt that fits the cap whole gets a step of its own beside the decodes,
the other prompts' chunks waiting one step. A running prompt that got nothing in one
step goes first in the next, so newcomers cannot starve it.

Batch slots are shared fairly, in the order of a *fair key* (lower is served first):
`(priority, caller rank, request rank, arrival)`. A sequence's caller rank counts the
sequences of the same caller (API key) ahead of it, when the caller's sequences are
dealt round-robin between its requests: every request's first sequence, then every
second one, and so on (a sequence's request rank says which round it is in). So a
caller's k-th slot competes with every other caller's k-th slot, and inside a caller a
request's first sequence beats another request's second.

- Waiting sequences are admitted in fair-key order (the key a sequence would have
  once running), except that while slots are free a prompt that fits whole in the
  step's remaining prompt tokens goes ahead of one that does not (for at most
  MAX_HEAD_BYPASS_STEPS steps in a row), so a burst of long prompts does not hold a
  short chat back.
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
MAX_HEAD_BYPASS_STEPS = 8
"""Steps in a row that short prompts may be admitted ahead of the first waiting sequence
in fair order; then it goes first, so a stream of short prompts cannot starve it."""


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


@dataclass
class _Step:
    """What one schedule() call has handed out so far."""

    budget: int
    """Tokens left in the step."""
    prefill_left: int = 0
    """Prompt tokens left (the budget, or the cap while anything decodes)."""
    granted: dict[int, int] = field(default_factory=dict)
    """id() of each scheduled sequence: its tokens."""
    prompt_grants: set[int] = field(default_factory=set)
    keys: dict[int, FairKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefill_left = self.prefill_left or self.budget

    def grant(self, req: Request, n: int, prefill: bool) -> None:
        self.granted[id(req)] = n
        self.budget -= n
        if prefill:
            self.prefill_left -= n
            self.prompt_grants.add(id(req))

    def take_back(self, req: Request) -> None:
        """Return a preempted sequence's tokens to the step."""
        n = self.granted.pop(id(req), 0)
        self.budget += n
        if id(req) in self.prompt_grants:
            self.prefill_left += n


def _in_prefill(req: Request) -> bool:
    """Whether `req` still has prompt (or recomputed) tokens to compute beyond the one
    token a decode step takes."""
    return req.num_tokens - req.num_computed_tokens > 1


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
        self._starved: set[int] = set()
        """id() of the running prompts the last step gave no tokens."""
        self._to_compute_est: dict[int, int] = {}
        """Per waiting sequence (id()), its tokens to compute as first estimated."""
        self._head_bypassed: tuple[int, int] = (0, 0)
        """id() of the waiting sequence first in fair order, and the steps in a row that
        shorter prompts were admitted ahead of it."""

    @property
    def num_waiting(self) -> int:
        return self._num_waiting

    def add(self, request: Request) -> None:
        """Queue a sequence. Admission limits are the engine's concern."""
        request.status = RequestStatus.WAITING
        self._enqueue(request)

    def has_free_seat(self) -> bool:
        """Whether one more sequence may run now (max_num_seqs)."""
        return len(self.running) < self.config.max_num_seqs

    def adopt(self, request: Request) -> None:
        """Add a sequence that already holds its KV blocks (a forked beam) straight to
        the running list; it is not counted against admission this step. The caller
        checks has_free_seat first."""
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

    def _best_waiting(
        self, shares: _Shares, fits: int | None = None
    ) -> tuple[FairKey, Request] | None:
        """The waiting sequence with the lowest fair key; with `fits`, among those with at
        most that many tokens to compute (beyond their prefix-cache hit)."""
        best: tuple[FairKey, Request] | None = None
        for queue in self._waiting.values():
            if fits is not None and self._to_compute(queue[0]) > fits:
                continue
            key = shares.key_if_admitted(queue[0])
            if best is None or key < best[0]:
                best = (key, queue[0])
        return best

    def _to_compute(self, req: Request) -> int:
        """Tokens a waiting sequence would compute if admitted now, as of the first time
        it was asked (an estimate for ordering only: admission matches the prefix again)."""
        n = self._to_compute_est.get(id(req))
        if n is None:
            n = req.num_tokens - self.kv.match_prefix(req).num_tokens
            self._to_compute_est[id(req)] = n
        return n

    def schedule(self) -> SchedulerOutput:
        """Pick this step's work. Takes KV blocks for everything it schedules; may
        preempt running sequences (listed in the output) for the pool or for fairness.

        With more than one sequence in the engine, prompt tokens are capped
        (max_prefill_tokens_when_busy) and granted in this order: newcomers whose whole
        prompt fits (while batch slots are free; at most half the cap when a running
        prompt got nothing last step), the running prompts that got nothing last step,
        the other newcomers in fair order, the other running prompts' next chunks. A
        step that admits such a whole newcomer, with no prompt starved from the last
        step, takes no other prompt tokens. Decodes come first, always."""
        out = SchedulerOutput()
        step = _Step(self.config.max_num_batched_tokens)
        ranked = self._ranked()
        self.running = [req for _, req in ranked]
        step.keys = {id(req): key for key, req in ranked}
        cap = self.config.max_prefill_tokens_when_busy
        decoding = any(not _in_prefill(r) for r in self.running)
        busy = decoding or len(self.running) + self._num_waiting > 1
        if cap is not None and busy:
            step.prefill_left = min(cap, step.budget)
        starved, self._starved = self._starved, set()

        # Decodes (and, when nothing decodes, the prompts starved last step), taking KV
        # blocks from the worst-keyed running sequences when the pool is short.
        i = 0
        while i < len(self.running) and step.budget > 0:
            req = self.running[i]
            i += 1
            prefill = _in_prefill(req)
            if prefill and (decoding or id(req) not in starved):
                continue
            drafts = req.draft_token_ids
            n = min(req.num_tokens + len(drafts) - req.num_computed_tokens, step.budget)
            if prefill:
                n = min(n, step.prefill_left)
            if drafts and n < 1 + len(drafts):
                del drafts[max(0, n - 1) :]  # verify only the drafts the budget covers
            if n <= 0:
                continue
            n = self._grant_running(req, n, out)
            if not n:
                break  # the request itself was preempted: nothing behind it remains
            step.grant(req, n, prefill)
        if out.preempted:
            self._note_starved(step.granted)
            return out  # the pool is short: admit nobody this step

        shares = _Shares(self.running)
        head = self._best_waiting(shares)
        bypassed = False
        if busy and head is not None and self._head_bypassed[1] < MAX_HEAD_BYPASS_STEPS:
            # A burst of long prompts must not hold a short one back for several steps.
            hungry = any(id(r) in starved for r in self.running)
            short_admitted = False
            half = max(1, step.prefill_left // 2)
            room = min(step.prefill_left, half) if hungry else step.prefill_left
            while self.has_free_seat() and min(room, step.budget) > 0:
                short = self._best_waiting(shares, fits=min(room, step.budget))
                if short is None:
                    break
                n = self._admit(short[1], short[0], step, shares, out)
                if not n:
                    break
                room -= n
                short_admitted = True
                bypassed = bypassed or short[1] is not head[1]
            if short_admitted and not hungry:
                # The short newcomers' first token should cost one step of decodes and
                # their own prompts: the other prompts' chunks wait a step, then go first.
                step.prefill_left = 0
        if decoding:
            for req in self.running:
                if id(req) in starved:
                    self._grant_chunk(req, step, out)

        fairness_left = MAX_FAIRNESS_PREEMPTIONS_PER_STEP
        while self._num_waiting and min(step.budget, step.prefill_left) > 0:
            best = self._best_waiting(shares)
            assert best is not None
            key, req = best
            if not self.has_free_seat():
                if not fairness_left or not self.running:
                    break
                worst = max(self.running, key=lambda r: step.keys[id(r)])
                if not key < step.keys[id(worst)]:
                    break
                self.running.remove(worst)
                step.take_back(worst)
                self._preempt(worst, out)
                self.num_fairness_preemptions += 1
                fairness_left -= 1
                shares = _Shares(self.running)
                key = shares.key_if_admitted(req)
            if not self._admit(req, key, step, shares, out):
                break

        if head is not None and bypassed and head[1].status == RequestStatus.WAITING:
            seen = self._head_bypassed[0] == id(head[1])
            self._head_bypassed = (id(head[1]), self._head_bypassed[1] + 1 if seen else 1)
        elif head is None or head[1].status != RequestStatus.WAITING:
            self._head_bypassed = (0, 0)

        # The other running prompts' next chunks, in fair order, from what is left.
        for req in self.running:
            if id(req) not in step.granted and _in_prefill(req):
                self._grant_chunk(req, step, out)
        self._note_starved(step.granted)
        return out

    def _admit(
        self, req: Request, key: FairKey, step: _Step, shares: _Shares, out: SchedulerOutput
    ) -> int:
        """Start waiting `req` with as much of its prompt as the step has room for.
        Returns the tokens scheduled; 0 (and nothing changed) when the pool is short."""
        prefix = self.kv.match_prefix(req)
        n = min(req.num_tokens - prefix.num_tokens, step.budget, step.prefill_left)
        if n <= 0 or not self.kv.allocate_slots(req, n, prefix):
            return 0
        self._dequeue(req)
        if req.num_preemptions == 0:
            req.num_cached_tokens = prefix.num_tokens
            req.first_scheduled_time = time.monotonic()
        req.num_computed_tokens = prefix.num_tokens
        req.status = RequestStatus.RUNNING
        self.running.append(req)
        shares.add(req)
        step.keys[id(req)] = key
        out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
        step.grant(req, n, True)
        return n

    def _grant_chunk(self, req: Request, step: _Step, out: SchedulerOutput) -> None:
        """A running prompt's next chunk from what the step has left. One the pool cannot
        hold now gets nothing (it goes early next step, when decodes may have freed room;
        with nothing decoding, it is served where preemption can make room)."""
        n = min(req.num_tokens - req.num_computed_tokens, step.budget, step.prefill_left)
        if n <= 0 or not self.kv.allocate_slots(req, n):
            return
        out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
        step.grant(req, n, True)

    def _grant_running(self, req: Request, n: int, out: SchedulerOutput) -> int:
        """Take KV slots for `n` more tokens of running `req`, dropping its drafts or
        preempting the worst-keyed running sequences (the end of self.running) while the
        pool is short. Returns the tokens scheduled: fewer when drafts were dropped, 0
        when `req` itself was preempted."""
        drafts = req.draft_token_ids
        while not self.kv.allocate_slots(req, n):
            if drafts:  # drafts are optional: drop them before preempting anyone
                del drafts[:]
                n = min(req.num_tokens - req.num_computed_tokens, n)
                continue
            victim = self.running.pop()
            self._preempt(victim, out)
            if victim is req:
                return 0
        out.scheduled.append(ScheduledRequest(req, n, self.kv.block_ids(req)))
        return n

    def _note_starved(self, granted: dict[int, int]) -> None:
        """Remember the running prompts this step gave nothing: they go first next step,
        so a stream of newcomers cannot hold a long prompt back for more than one step."""
        self._starved = {id(r) for r in self.running if id(r) not in granted and _in_prefill(r)}

    def _dequeue(self, req: Request) -> bool:
        """Remove `req` from the waiting sequences; False if it was not there."""
        queue = self._waiting.get(req.parent_id)
        if not queue:
            return False
        for i, other in enumerate(queue):
            if other is req:
                del queue[i]
                self._num_waiting -= 1
                self._to_compute_est.pop(id(req), None)
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
