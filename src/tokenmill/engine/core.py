"""The synchronous engine: admit requests, then step = schedule -> run model -> postprocess."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import torch

from tokenmill.config import EngineConfig
from tokenmill.engine.kv_cache.manager import KVCacheManager
from tokenmill.engine.model_runner import ModelRunner
from tokenmill.engine.output_processor import OutputProcessor
from tokenmill.engine.outputs import RequestOutput
from tokenmill.engine.request import Request, RequestStatus
from tokenmill.engine.sampler import Sampler, SamplingRow, prompt_logprobs
from tokenmill.engine.scheduler import Scheduler, SchedulerOutput
from tokenmill.errors import ContextLengthError, InvalidRequestError, QueueFullError
from tokenmill.model.loader import LoadedModel, load_model
from tokenmill.sampling_params import SamplingParams


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


class EngineCore:
    """Owns the model runner, scheduler and output processor. Not thread-safe: one
    thread drives it (the async engine's worker, or the offline LLM's caller)."""

    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None):
        self.num_threads = config.num_threads or default_num_threads()
        torch.set_num_threads(self.num_threads)
        mc = config.model
        self.loaded = loaded or load_model(mc.model, mc.dtype, mc.max_model_len,
                                           mc.quantization)
        self.config = config
        self.tokenizer = self.loaded.tokenizer
        self.model_name = mc.served_name or self.loaded.name
        self.max_model_len = self.loaded.max_model_len
        self.runner = ModelRunner(
            self.loaded.model, self.loaded.arch, self._kv_dtype(), config.cache,
            self.max_model_len,
        )
        self.kv = KVCacheManager(
            self.runner.num_blocks, config.cache.block_size, config.cache.enable_prefix_caching
        )
        self.scheduler = Scheduler(config.scheduler, self.kv)
        eos = set(self.loaded.arch.eos_token_ids)
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = eos
        self.outputs = OutputProcessor(self.tokenizer, eos, self.max_model_len)
        self.sampler = Sampler()
        self._children: dict[str, list[Request]] = {}
        self._arrivals = itertools.count()
        self.prompt_tokens_computed = 0
        self.generation_tokens = 0
        self.num_steps = 0

    def _kv_dtype(self) -> torch.dtype:
        choice = self.config.cache.dtype
        if choice == "auto":
            if self.loaded.quantization == "int8":
                return torch.bfloat16
            return self.loaded.dtype
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]

    # -- admission ---------------------------------------------------------------------

    def tokenize_prompt(self, prompt: str | None, prompt_token_ids: list[int] | None) -> list[int]:
        """The prompt's token ids, validated against the vocabulary and context."""
        if prompt_token_ids is None:
            if prompt is None:
                raise InvalidRequestError("Either a prompt or prompt token ids is required.",
                                          param="prompt")
            prompt_token_ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        if not prompt_token_ids:
            raise InvalidRequestError("The prompt is empty: send at least one token.",
                                      param="prompt")
        vocab = self.loaded.arch.vocab_size
        bad = [t for t in prompt_token_ids if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(
                f"Token id {bad[0]} is outside the vocabulary [0, {vocab}).", param="prompt"
            )
        return list(prompt_token_ids)

    def resolve_max_tokens(self, num_prompt: int, params: SamplingParams) -> int:
        """New tokens allowed; raises ContextLengthError instead of truncating."""
        limit = self.max_model_len
        if params.max_tokens is None:
            if num_prompt >= limit:
                raise ContextLengthError(
                    f"This model's maximum context length is {limit} tokens, and the prompt "
                    f"has {num_prompt} tokens, leaving no room for a completion. Shorten the "
                    "prompt."
                )
            return limit - num_prompt
        if num_prompt + params.max_tokens > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {num_prompt + params.max_tokens} tokens ({num_prompt} in the "
                f"prompt, {params.max_tokens} for the completion). Reduce the prompt or "
                "max_tokens."
            )
        if params.max_tokens == 0 and params.prompt_logprobs is None:
            raise InvalidRequestError(
                "max_tokens must be at least 1 (0 is only allowed with echo/prompt_logprobs).",
                param="max_tokens",
            )
        return params.max_tokens

    def _check_param_token_ids(self, params: SamplingParams) -> None:
        """Token ids in the params index the logits: one outside the vocabulary would
        fail (or, if negative, silently wrap) inside a step, taking every request down."""
        vocab = self.loaded.arch.vocab_size
        for name, ids in (("logit_bias", params.logit_bias or {}),
                          ("stop_token_ids", params.stop_token_ids)):
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise InvalidRequestError(
                    f"{name} has token id {bad[0]}, outside the vocabulary [0, {vocab}).",
                    param=name,
                )

    def add_request(
        self,
        request_id: str,
        params: SamplingParams,
        prompt: str | None = None,
        prompt_token_ids: list[int] | None = None,
        priority: int = 0,
    ) -> None:
        """Validate and queue a request with `params.n` sequences. Raises
        InvalidRequestError, ContextLengthError or QueueFullError; on error nothing is
        queued."""
        if request_id in self._children:
            raise InvalidRequestError(f"Request id {request_id!r} is already in use.")
        ids = self.tokenize_prompt(prompt, prompt_token_ids)
        max_tokens = self.resolve_max_tokens(len(ids), params)
        self._check_param_token_ids(params)
        # Requests that can start at the next step do not count as queued.
        sc = self.config.scheduler
        free_seats = max(0, sc.max_num_seqs - len(self.scheduler.running))
        limit = sc.max_waiting
        if self.scheduler.num_waiting >= limit + free_seats:
            raise QueueFullError(
                f"The server is busy: {self.scheduler.num_waiting} requests are waiting "
                f"(limit {limit}). Retry shortly."
            )
        children = []
        for i in range(params.n):
            gen = None
            if params.seed is not None and not params.greedy:
                gen = torch.Generator().manual_seed(params.seed + i)
            children.append(
                Request(
                    request_id=f"{request_id}#{i}",
                    parent_id=request_id,
                    index=i,
                    prompt_token_ids=ids,
                    params=params,
                    max_tokens=max_tokens,
                    priority=priority,
                    arrival_seq=next(self._arrivals),
                    generator=gen,
                    wants_prompt_logprobs=(i == 0 and params.prompt_logprobs is not None),
                )
            )
        self.outputs.add(request_id, prompt, children)
        self._children[request_id] = children
        for child in children:
            self.scheduler.add(child)

    def abort(self, request_id: str) -> list[RequestOutput]:
        """End a request at any point, freeing its blocks. Unknown ids are ignored."""
        children = self._children.pop(request_id, None)
        if not children:
            return []
        for child in children:
            if not child.is_finished:
                self.scheduler.finish(child, RequestStatus.FINISHED_ABORTED)
                self.outputs.finish_without_output(child, RequestStatus.FINISHED_ABORTED)
        for child in children:
            self.outputs.mark_prompt_done(child)
        return self.outputs.collect([request_id])

    # -- the loop ----------------------------------------------------------------------

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[RequestOutput]:
        """One iteration: schedule -> run model -> postprocess. Returns the outputs of
        requests that progressed."""
        sched = self.scheduler.schedule()
        if not sched.scheduled:
            return []
        logits = self.runner.execute(sched)
        self.scheduler.update_after_step(sched)
        touched = self._postprocess(sched, logits)
        self.num_steps += 1
        return self.outputs.collect(touched)

    def _postprocess(self, sched: SchedulerOutput, step) -> list[str]:
        rows, row_reqs = [], []
        touched: list[str] = []
        for s, lr in zip(sched.scheduled, step.per_request):
            req = s.request
            start = req.num_computed_tokens - s.num_new_tokens
            self.prompt_tokens_computed += max(0, min(req.num_computed_tokens,
                                                      req.num_prompt_tokens) - start)
            if lr.prompt_rows is not None:
                a, b = lr.prompt_rows
                tops = prompt_logprobs(step.logits[a:b], torch.tensor(lr.prompt_targets),
                                       req.params.prompt_logprobs)
                self.outputs.add_prompt_logprobs(req, start + 1, tops)
                touched.append(req.parent_id)
            if req.num_computed_tokens >= req.num_tokens and req.max_tokens == 0:
                self._finish(req, RequestStatus.FINISHED_LENGTH)
                touched.append(req.parent_id)
            if lr.sample_row is not None:
                rows.append(lr.sample_row)
                row_reqs.append(req)
        if rows:
            sampled = self.sampler.sample(step.logits[torch.tensor(rows)],
                                          [self._sampling_row(r) for r in row_reqs])
            for req, tok, top in zip(row_reqs, sampled.token_ids, sampled.logprobs):
                self.outputs.mark_prompt_done(req)
                self.generation_tokens += 1
                if self.outputs.append_token(req, tok, top):
                    self._finish(req, req.status)
                touched.append(req.parent_id)
        return list(dict.fromkeys(touched))

    def _sampling_row(self, req: Request) -> SamplingRow:
        p = req.params
        banned: list[int] = []
        if len(req.output_token_ids) < p.min_tokens:
            banned = list(self.eos_token_ids | set(p.stop_token_ids))
        return SamplingRow(p, req.prompt_token_ids, req.output_token_ids, req.generator, banned)

    def _finish(self, req: Request, status: RequestStatus) -> None:
        self.scheduler.finish(req, status)
        self.outputs.finish_without_output(req, status)
        self.outputs.mark_prompt_done(req)
        children = self._children.get(req.parent_id, [])
        if all(c.is_finished for c in children):
            self._children.pop(req.parent_id, None)

    def stats(self) -> EngineStats:
        pool = self.kv.pool
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
        )
