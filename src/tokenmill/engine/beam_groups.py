"""The engine's beam-search requests: each a group of scheduler sequences (its live
beams) stepped together, whose decisions (BeamSearch) this module carries out on the
scheduler, the KV cache and the output side.

KV sharing is copy-on-write on the paged cache: the prompt is prefilled once by a root
sequence; a fork shares its source's full blocks by reference (BlockPool refcounts, as
prefix caching does) and gets a copy of the partly filled last block only, since both
will write their next tokens there.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch

from tokenmill.engine.beam import BeamSearch, BeamStep
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.model_runner import ModelRunner
from tokenmill.engine.output_processor import OutputProcessor
from tokenmill.engine.request import GenerationRequest, Request, RequestStatus
from tokenmill.engine.scheduler import Scheduler


class BeamGroups:
    """Owns every live beam search. Mutates the scheduler (adds, adopts, parks and
    finishes beams), the KV manager (forks), the runner's KV tensors (block copies)
    and the output processor (the final hypotheses)."""

    def __init__(
        self,
        scheduler: Scheduler,
        kv: KVCacheManager,
        runner: ModelRunner,
        outputs: OutputProcessor,
        eos_token_ids: set[int],
        arrivals: Iterator[int],
    ):
        self.scheduler = scheduler
        self.kv = kv
        self.runner = runner
        self.outputs = outputs
        self.eos_token_ids = eos_token_ids
        self._arrivals = arrivals
        self._ids = itertools.count()
        self.searches: dict[str, BeamSearch] = {}
        """Per request id, its search."""

    def add(self, req: GenerationRequest, prompt: list[int], max_tokens: int) -> list[Request]:
        """Queue a beam search: one sequence (the root) prefills the prompt once; the
        beams fork from it after its first token. Returns the `n` output sequences,
        registered with the output processor and never scheduled: they receive the best
        hypotheses when the search ends."""
        params = req.params

        def sequence(request_id: str, index: int) -> Request:
            return Request(
                request_id=request_id,
                parent_id=req.request_id,
                index=index,
                prompt_token_ids=prompt,
                params=params,
                max_tokens=max_tokens,
                priority=req.priority,
                arrival_seq=next(self._arrivals),
                caller=req.caller,
            )

        outputs = [sequence(f"{req.request_id}#{i}", i) for i in range(params.n)]
        root = sequence(f"{req.request_id}#beam{next(self._ids)}", 0)
        self.outputs.add(req.request_id, req.prompt, outputs)
        self.searches[req.request_id] = BeamSearch(
            params.beam, params.n, max_tokens, self.eos_token_ids, root
        )
        self.scheduler.add(root)
        return outputs

    def offer(self, beam: Request, logits: torch.Tensor) -> BeamSearch | None:
        """Record a beam's next-token logits; returns its search when every live beam of
        it has a row (call `apply` with it then), else None."""
        search = self.searches[beam.parent_id]
        return search if search.offer(beam, logits) else None

    def abort(self, request_id: str) -> None:
        """Free a search's live beams; unknown ids are ignored."""
        search = self.searches.pop(request_id, None)
        for beam in search.live if search else []:
            self.scheduler.finish(beam, RequestStatus.FINISHED_ABORTED)

    def park_idle(self) -> bool:
        """Break a stall: when nothing could be scheduled, beams waiting for their
        siblings may hold the blocks a sibling needs to be admitted. Park the worst such
        beam (its row is kept; it re-enters the queue after the beam step). Returns
        whether one was parked."""
        for req in reversed(self.scheduler.running):
            search = self.searches.get(req.parent_id)
            if search is not None and search.waiting_on_others(req):
                self.scheduler.park(req)
                search.parked.append(req)
                return True
        return False

    def apply(self, search: BeamSearch, step: BeamStep) -> str:
        """Carry out a beam step; returns the request id. A source kept once is
        extended in place; each further continuation of it is a fork; sources with no
        continuation are freed. When the search ends, its best hypotheses become the
        request's outputs and the search is forgotten."""
        pid = search.root.parent_id
        if step.done:
            self._finish(search)
            return pid
        extended: set[int] = set()
        beams, copies = [], []
        for choice in step.survivors:
            src = choice.source
            if id(src) not in extended:
                extended.add(id(src))
                beams.append(src)
                continue
            fork = self._fork(src, copies)
            beams.append(fork)
        self.runner.copy_blocks(copies)
        for beam, choice in zip(beams, step.survivors, strict=True):
            beam.output_token_ids.append(choice.token_id)
            if any(beam is p for p in search.parked):
                self.scheduler.add(beam)
        for beam in search.live:
            if id(beam) not in extended:
                self.scheduler.finish(beam, RequestStatus.FINISHED_ABORTED)
        search.set_live(beams, [c.score for c in step.survivors])
        return pid

    def _fork(self, src: Request, copies: list[tuple[int, int]]) -> Request:
        """A new beam with `src`'s tokens, sharing its KV (the block copy it needs is
        appended to `copies`); queued to recompute instead when `src` holds no blocks
        (it was preempted), no block is free or every seat (max_num_seqs) is taken: the
        search then waits for the fork's row, as for any sibling's."""
        fork = Request(
            request_id=f"{src.parent_id}#beam{next(self._ids)}",
            parent_id=src.parent_id,
            index=0,
            prompt_token_ids=src.prompt_token_ids,
            params=src.params,
            max_tokens=src.max_tokens,
            priority=src.priority,
            arrival_seq=src.arrival_seq,
            caller=src.caller,
            output_token_ids=list(src.output_token_ids),
            num_cached_tokens=src.num_cached_tokens,
            first_scheduled_time=src.first_scheduled_time,
        )
        copy, shares = None, self.kv.holds(src) and self.scheduler.has_free_seat()
        if shares:
            try:
                copy = self.kv.fork(src, fork)
            except MemoryError:
                shares = False
        if not shares:
            self.scheduler.add(fork)  # recomputes; the prefix cache serves full blocks
            return fork
        fork.num_computed_tokens = src.num_computed_tokens
        self.scheduler.adopt(fork)
        if copy is not None:
            copies.append(copy)
        return fork

    def _finish(self, search: BeamSearch) -> None:
        root = search.root
        for beam in search.live:
            self.scheduler.finish(beam, RequestStatus.FINISHED_STOPPED)
        del self.searches[root.parent_id]
        outputs = self.outputs.parents[root.parent_id].completions
        for comp, hyp in zip(outputs, search.best(), strict=True):
            out = comp.request
            out.arrival_time = root.arrival_time
            out.first_scheduled_time = root.first_scheduled_time
            out.num_cached_tokens = root.num_cached_tokens
            for token in hyp.token_ids:
                if self.outputs.append_token(out, token, None):
                    break
            self.outputs.mark_prompt_done(out)
