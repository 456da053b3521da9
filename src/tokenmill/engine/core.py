"""The synchronous engine: admit requests, then step = schedule -> run model -> postprocess."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tokenmill import heap
from tokenmill.config import EngineConfig
from tokenmill.engine.beam import BeamSearch
from tokenmill.engine.beam_groups import BeamGroups
from tokenmill.engine.draft_proposer import load_draft_proposer
from tokenmill.engine.grammar import GrammarCache
from tokenmill.engine.input_processor import Capacity, InputProcessor
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.model_runner import ModelRunner
from tokenmill.engine.output_processor import OutputProcessor
from tokenmill.engine.outputs import RequestOutput
from tokenmill.engine.request import GenerationRequest, Request, RequestStatus
from tokenmill.engine.sampler import Sampler, SamplingRow, prompt_logprobs
from tokenmill.engine.scheduler import Scheduler, SchedulerOutput
from tokenmill.engine.speculator import Speculator
from tokenmill.errors import InvalidRequestError, QueueFullError
from tokenmill.model.chat_template import read_chat_template
from tokenmill.model.loader import LoadedModel, load_model
from tokenmill.sampling_params import SamplingDefaults


@dataclass
class EngineStats:
    """Counters a server exports and tests assert on. Token counts are cumulative."""

    num_running: int
    num_waiting: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    prompt_tokens_computed: int
    generation_tokens: int
    num_preemptions: int
    num_steps: int
    spec_draft_tokens: int = 0
    """Speculative draft tokens verified (proposed and scheduled)."""
    spec_accepted_tokens: int = 0
    """Of spec_draft_tokens, those the model accepted."""
    spec_verify_steps: int = 0
    """Sequence-steps that verified drafts."""
    sequence_steps: int = 0
    """Sequence-steps that emitted tokens (each sequence in each step counts once)."""

    spec_acceptance_rate: float | None = None
    """spec_accepted_tokens / spec_draft_tokens; None before any draft."""
    tokens_per_sequence_step: float | None = None
    """generation_tokens / sequence_steps: 1.0 without speculation; None before any."""


@dataclass(frozen=True)
class Precision:
    """What the precision settings resolved to on this machine; logged at start-up and
    shown in /version and /v1/models, so `auto` is never a silent choice."""

    dtype: str
    """Weights' compute dtype ("float32", "bfloat16")."""
    quantization: str | None
    kv_cache_dtype: str
    kernels: str
    """Which code runs the hot loops (the loaded model's `kernel_path`)."""

    def describe(self) -> str:
        quant = f", {self.quantization} weights" if self.quantization else ""
        return f"{self.dtype}{quant}, KV cache {self.kv_cache_dtype}, {self.kernels} kernels"


def default_num_threads() -> int:
    """Model compute threads: every core but one, which is left to the HTTP loop,
    tokenization and the output side. Measured on 2 cores, int8 decode at batch 64: one
    thread 280 tok/s idle and 210 beside a busy process; two threads 298 idle but 93
    beside it, because each parallel region waits for the thread that lost its core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def _rows_of(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """The logits of `rows`: a view when they are consecutive (the common decode step,
    where copying (32, vocab) float32 cost ~2 ms), else a copy. The sampler mutates what
    it gets; a view's rows are only the rows being sampled."""
    if rows == list(range(rows[0], rows[0] + len(rows))):
        return logits[rows[0] : rows[0] + len(rows)]
    return logits[torch.tensor(rows)]


class EngineCore:
    """Owns the model runner, scheduler and output processor. Not thread-safe: one
    thread drives it (the async engine's worker, or the offline LLM's caller)."""

    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        self.num_threads = config.num_threads or default_num_threads()
        torch.set_num_threads(self.num_threads)
        mc = config.model
        self.loaded = loaded or load_model(
            mc.model, mc.dtype, mc.max_model_len, mc.quantization, mc.batch_invariant
        )
        self.config = config
        self.tokenizer = self.loaded.tokenizer
        if mc.chat_template is not None:
            self.tokenizer = self.tokenizer.with_chat_template(read_chat_template(mc.chat_template))
        self.model_name = mc.served_model_name or self.loaded.name
        self.max_model_len = self.loaded.max_model_len
        self.sampling_defaults = (
            SamplingDefaults.from_mapping(self.loaded.sampling_defaults)
            if mc.generation_config == "auto"
            else SamplingDefaults()
        )
        self.runner = ModelRunner(
            self.loaded.model,
            self.loaded.arch,
            self._kv_dtype(),
            config.cache,
            self.max_model_len,
        )
        self.precision = Precision(
            dtype=str(self.loaded.dtype).removeprefix("torch."),
            quantization=self.loaded.quantization,
            kv_cache_dtype=str(self.runner.dtype).removeprefix("torch."),
            kernels=getattr(self.loaded, "kernel_path", None) or "pytorch and native attention",
        )
        self.kv = KVCacheManager(
            self.runner.num_blocks, config.cache.block_size, config.cache.enable_prefix_caching
        )
        self.scheduler = Scheduler(config.scheduler, self.kv)
        sc = config.scheduler
        self.inputs = InputProcessor(
            self.tokenizer,
            self.loaded.arch.vocab_size,
            self.max_model_len,
            mc.default_max_tokens,
            config.limits,
            Capacity(None if sc.max_queue is None else sc.max_num_seqs + sc.max_queue),
        )
        eos = set(self.loaded.arch.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = eos
        self.outputs = OutputProcessor(self.tokenizer, eos, self.max_model_len)
        self.sampler = Sampler()
        self.grammars = GrammarCache(
            self.tokenizer, self.loaded.arch.vocab_size, sorted(self.eos_token_ids)
        )
        self._children: dict[str, list[Request]] = {}
        self._arrivals = itertools.count()
        self.beams = BeamGroups(
            self.scheduler, self.kv, self.runner, self.outputs, eos, self._arrivals
        )
        self.prompt_tokens_computed = 0
        self.generation_tokens = 0
        self.num_steps = 0
        self.speculator = (
            Speculator(
                config.speculative,
                self.max_model_len,
                load_draft_proposer(config.speculative, self.loaded, self.max_model_len),
            )
            if config.speculative.enabled
            else None
        )
        self.sequence_steps = 0
        # Loading freed its read buffers (the checkpoint's tensors, the blocks before
        # repacking); glibc would keep them resident: SmolLM2's RSS 1573 -> 1513 MB.
        heap.trim()

    def _kv_dtype(self) -> torch.dtype:
        choice = self.config.cache.dtype
        if choice == "auto":
            if self.loaded.quantization == "int8":
                return torch.bfloat16
            return self.loaded.dtype
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]

    # -- admission ---------------------------------------------------------------------

    def add_request(self, req: GenerationRequest) -> None:
        """Validate and queue a request with `req.params.n` sequences. Raises
        InvalidRequestError, ContextLengthError or QueueFullError; on error nothing is
        queued."""
        if req.request_id in self._children:
            raise InvalidRequestError(
                f"Request id {req.request_id!r} is already in use.", code="duplicate_request_id"
            )
        admitted = self.inputs.process(req)
        params = req.params
        if params.structured is not None:
            self.grammars.compile(params.structured)  # a bad schema is refused here (400)
        # The queue counts sequences (n of them per request), and sequences that can
        # start at the next step do not count as queued. A request that could never fit
        # was refused above (400); this one could, once others finish (429).
        sc = self.config.scheduler
        free_seats = max(0, sc.max_num_seqs - len(self.scheduler.running))
        limit = sc.max_queue
        waiting = self.scheduler.num_waiting
        adds = params.beam.width if params.beam is not None else params.n
        if limit is not None and waiting + adds > limit + free_seats:
            raise QueueFullError(
                f"The server is busy: {waiting} sequences are waiting and this request "
                f"adds {adds} (limit {limit}). Retry shortly."
            )
        if params.beam is not None:
            outputs = self.beams.add(req, admitted.token_ids, admitted.max_tokens)
            self._children[req.request_id] = outputs
            return
        children = []
        for i in range(params.n):
            gen = None
            if params.seed is not None and not params.greedy:
                gen = torch.Generator().manual_seed(params.choice_seed(i))
            children.append(
                Request(
                    request_id=f"{req.request_id}#{i}",
                    parent_id=req.request_id,
                    index=i,
                    prompt_token_ids=admitted.token_ids,
                    params=params,
                    max_tokens=admitted.max_tokens,
                    priority=req.priority,
                    arrival_seq=next(self._arrivals),
                    caller=req.caller,
                    generator=gen,
                    wants_prompt_logprobs=(i == 0 and params.prompt_logprobs is not None),
                    constraint=(
                        self.grammars.constraint(params.structured) if params.structured else None
                    ),
                    spec=self.speculator.new_state(params) if self.speculator else None,
                )
            )
        self.outputs.add(req.request_id, req.prompt, children)
        self._children[req.request_id] = children
        for child in children:
            self.scheduler.add(child)

    def abort(self, request_id: str) -> list[RequestOutput]:
        """End a request at any point, freeing its blocks. Unknown ids are ignored."""
        self.beams.abort(request_id)
        children = self._children.pop(request_id, None)
        if not children:
            return []
        for child in children:
            if self.speculator is not None:
                self.speculator.release(child)
            if not child.is_finished:
                self.scheduler.finish(child, RequestStatus.FINISHED_ABORTED)
                self.outputs.finish_without_output(child, RequestStatus.FINISHED_ABORTED)
        for child in children:
            self.outputs.mark_prompt_done(child)
        return self.outputs.collect([request_id])

    # -- the loop ----------------------------------------------------------------------

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def run(
        self, inbox: Callable[[bool], bool], deliver: Callable[[list[RequestOutput]], None]
    ) -> None:
        """The one drive loop; the offline LLM, the CLI and the async engine all use it.
        `inbox(idle)` applies the caller's pending commands (add, abort), blocking for
        one when `idle`, and returns False to stop; `deliver` receives each step's
        outputs (possibly none)."""
        while inbox(not self.has_unfinished()):
            if self.has_unfinished():
                deliver(self.step())

    def step(self) -> list[RequestOutput]:
        """One iteration: schedule -> run model -> postprocess. Returns the outputs of
        requests that progressed."""
        if self.speculator is not None:
            self.speculator.propose(self.scheduler.running)
        sched = self.scheduler.schedule()
        if self.speculator is not None:
            for req in sched.preempted:  # recomputed from scratch when it runs again
                self.speculator.release(req)
        if not sched.scheduled:
            self.beams.park_idle()
            return []
        logits = self.runner.execute(sched)
        self.scheduler.update_after_step(sched)
        touched = self._postprocess(sched, logits)
        self.num_steps += 1
        return self.outputs.collect(touched)

    def _emit(self, req: Request, token_id: int, top) -> bool:
        """Append one token to `req` (grammar, counters, stop rules); True if it finished."""
        if req.constraint is not None:
            req.constraint.accept(token_id)
        self.generation_tokens += 1
        return self.outputs.append_token(req, token_id, top)

    def _postprocess(self, sched: SchedulerOutput, step) -> list[str]:
        rows, row_reqs = [], []
        touched: list[str] = []
        ready: list[BeamSearch] = []
        for s, lr in zip(sched.scheduled, step.per_request):
            req = s.request
            start = req.num_computed_tokens - s.num_new_tokens
            self.prompt_tokens_computed += max(
                0, min(req.num_computed_tokens, req.num_prompt_tokens) - start
            )
            if lr.prompt_rows is not None:
                a, b = lr.prompt_rows
                tops = prompt_logprobs(
                    step.logits[a:b], torch.tensor(lr.prompt_targets), req.params.prompt_logprobs
                )
                self.outputs.add_prompt_logprobs(req, start + 1, tops)
                touched.append(req.parent_id)
            if req.num_computed_tokens >= req.num_tokens and req.max_tokens == 0:
                self._finish(req, RequestStatus.FINISHED_LENGTH)
                touched.append(req.parent_id)
            if lr.verify_rows is not None:
                a, b = lr.verify_rows
                verified = self.speculator.verify(
                    req, step.logits[a:b], self._sampling_row, self._emit
                )
                self.sequence_steps += 1
                if verified.finished:
                    self._finish(req, req.status)
                else:
                    self.scheduler.reject_drafts(req, verified.num_rejected)
                touched.append(req.parent_id)
            if lr.sample_row is not None and req.parent_id in self.beams.searches:
                self.generation_tokens += 1
                search = self.beams.offer(req, step.logits[lr.sample_row])
                if search is not None:
                    ready.append(search)
            elif lr.sample_row is not None:
                rows.append(lr.sample_row)
                row_reqs.append(req)
        if rows:
            # The runner's logits are inference tensors; a view of them is mutated in place.
            with torch.inference_mode():
                sampled = self.sampler.sample(
                    _rows_of(step.logits, rows), [self._sampling_row(r) for r in row_reqs]
                )
            for req, tok, top in zip(row_reqs, sampled.token_ids, sampled.logprobs):
                self.outputs.mark_prompt_done(req)
                self.sequence_steps += 1
                if self._emit(req, tok, top):
                    self._finish(req, req.status)
                touched.append(req.parent_id)
        for search in ready:
            pid = self.beams.apply(search, search.advance())
            if pid not in self.beams.searches:
                self._children.pop(pid, None)
            touched.append(pid)
        return list(dict.fromkeys(touched))

    def _sampling_row(self, req: Request) -> SamplingRow:
        p = req.params
        banned: list[int] = []
        if len(req.output_token_ids) < p.min_tokens:
            banned = list(self.eos_token_ids | set(p.stop_token_ids))
        return SamplingRow(
            p, req.prompt_token_ids, req.output_token_ids, req.generator, banned, req.constraint
        )

    def _finish(self, req: Request, status: RequestStatus) -> None:
        if self.speculator is not None:
            self.speculator.release(req)
        self.scheduler.finish(req, status)
        self.outputs.finish_without_output(req, status)
        self.outputs.mark_prompt_done(req)
        children = self._children.get(req.parent_id, [])
        if all(c.is_finished for c in children):
            self._children.pop(req.parent_id, None)

    def stats(self) -> EngineStats:
        pool = self.kv.pool
        spec = self.speculator
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=self.scheduler.num_waiting,
            kv_blocks_total=pool.num_blocks - 1,
            kv_blocks_used=pool.num_used,
            kv_blocks_cached=pool.num_cached,
            prefix_cache_queries=self.kv.prefix_queries,
            prefix_cache_hits=self.kv.prefix_hits,
            prompt_tokens_computed=self.prompt_tokens_computed,
            generation_tokens=self.generation_tokens,
            num_preemptions=self.scheduler.num_preemptions,
            num_steps=self.num_steps,
            spec_draft_tokens=spec.draft_tokens if spec else 0,
            spec_accepted_tokens=spec.accepted_tokens if spec else 0,
            spec_verify_steps=spec.verify_steps if spec else 0,
            sequence_steps=self.sequence_steps,
            spec_acceptance_rate=(
                spec.accepted_tokens / spec.draft_tokens if spec and spec.draft_tokens else None
            ),
            tokens_per_sequence_step=(
                self.generation_tokens / self.sequence_steps if self.sequence_steps else None
            ),
        )
