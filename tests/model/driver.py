"""Drives the engine's own ModelRunner with SchedulerOutputs laid out by hand.

A test says which sequences share a step and how many tokens each computes (a whole
prompt, a chunk of one, or a one-token decode); the driver builds the real
`Request` / `ScheduledRequest` / `SchedulerOutput` objects the scheduler would, runs
`ModelRunner.execute`, and advances `num_computed_tokens` as the scheduler's
`update_after_step` does. Block tables come from a shuffled pool, so every sequence's
K/V is scattered across the cache and the paging is exercised, not a contiguous case.
"""

from __future__ import annotations

import torch

from tokenmill.config import CacheConfig
from tokenmill.engine.model_runner import ModelRunner
from tokenmill.engine.request import Request
from tokenmill.engine.scheduler import ScheduledRequest, SchedulerOutput
from tokenmill.model.loader import LoadedModel
from tokenmill.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=None)


class RunnerDriver:
    """One ModelRunner and the requests a test feeds it. Each request reports prompt
    logprobs, so the runner returns logits for every prompt row it computes, not only
    the last (the path `prompt_logprobs` and lm-eval's loglikelihoods take)."""

    def __init__(
        self,
        loaded: LoadedModel,
        kv_dtype: torch.dtype,
        num_blocks: int = 64,
        block_size: int = 16,
        seed: int = 0,
    ):
        cache = CacheConfig(block_size=block_size, num_blocks=num_blocks)
        # The runner checks its pool holds one max_model_len sequence; ours is the pool.
        capacity = (num_blocks - 1) * block_size
        self.runner = ModelRunner(loaded.model, loaded.arch, kv_dtype, cache, capacity)
        self.block_size = block_size
        gen = torch.Generator().manual_seed(seed)
        self._free = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()  # 0: null
        self._blocks: dict[str, list[int]] = {}
        self.requests: dict[str, Request] = {}

    def add(self, name: str, prompt: list[int], every_row: bool = True) -> None:
        """Register a sequence; every_row=False asks only for its sampling rows."""
        self.requests[name] = Request(
            request_id=name,
            parent_id=name,
            index=0,
            prompt_token_ids=list(prompt),
            params=GREEDY,
            max_tokens=1 << 20,
            wants_prompt_logprobs=every_row,
        )
        self._blocks[name] = []

    def append(self, name: str, token: int) -> None:
        """Record `token` as the sequence's next output token (computed next step)."""
        self.requests[name].output_token_ids.append(token)

    def step(self, work: dict[str, int]) -> dict[str, torch.Tensor]:
        """One forward pass computing `work[name]` new tokens of each named sequence, in
        the given order. Returns the float32 logits of each sequence that got any, one
        row per computed position that predicts a token: (rows, vocab). A sequence
        without prompt logprobs gets a row only when its prompt is complete."""
        scheduled = []
        for name, n in work.items():
            req = self.requests[name]
            end = req.num_computed_tokens + n
            assert n >= 1 and end <= req.num_tokens, (name, n, req.num_tokens)
            blocks = self._blocks[name]
            while len(blocks) * self.block_size < end:
                blocks.append(self._free.pop())
            scheduled.append(ScheduledRequest(req, n, list(blocks)))
        out = SchedulerOutput(scheduled=scheduled)
        step = self.runner.execute(out)
        result = {}
        for s, rows in zip(scheduled, step.per_request, strict=True):
            parts = []
            if rows.prompt_rows is not None:
                parts.append(step.logits[rows.prompt_rows[0] : rows.prompt_rows[1]])
            if rows.sample_row is not None:
                parts.append(step.logits[rows.sample_row : rows.sample_row + 1])
            s.request.num_computed_tokens += s.num_new_tokens
            if parts:
                result[s.request.request_id] = torch.cat(parts)
        return result

    def greedy(
        self, prompts: list[list[int]], max_new_tokens: int, eos: set[int], chunk: int | None = None
    ) -> list[list[int]]:
        """Greedy continuations of all prompts batched together, as the engine's greedy
        sampler picks them (argmax of the float32 logits). Each step prefills the next
        `chunk` tokens of every unfinished prompt (all of it when None) beside the decodes
        of the others; a sequence leaves the batch after EOS or max_new_tokens."""
        names = [f"greedy-{i}" for i in range(len(prompts))]
        for name, prompt in zip(names, prompts):
            self.add(name, prompt, every_row=False)
        for _ in range(sum(len(p) for p in prompts) + max_new_tokens):
            live = {}
            for name in names:
                req = self.requests[name]
                out = req.output_token_ids
                if out and (len(out) >= max_new_tokens or out[-1] in eos):
                    continue
                todo = req.num_tokens - req.num_computed_tokens
                live[name] = todo if chunk is None else min(chunk, todo)
            if not live:
                return [self.requests[n].output_token_ids for n in names]
            for name, logits in self.step(live).items():
                self.append(name, int(logits[-1].argmax()))
        raise AssertionError("greedy decoding did not finish within its step bound")
