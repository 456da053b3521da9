"""Steps laid out by hand, run by the engine's own ModelRunner.

A test names which sequences share a step and what each computes (a whole prompt, a
chunk of one, or one decoded token); this builds the `Request` / `ScheduledRequest` /
`SchedulerOutput` the scheduler would, runs `ModelRunner.execute` and advances
`num_computed_tokens` as the scheduler does after a step. Blocks come from a shuffled
pool, so each sequence's K/V lies scattered across the cache.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch

from tokenmill.config import CacheConfig
from tokenmill.engine.model_runner import ModelRunner
from tokenmill.engine.request import Request
from tokenmill.engine.scheduler import ScheduledRequest, SchedulerOutput
from tokenmill.sampling_params import SamplingParams


class _HiddenProbe:
    """The model with its head taken off: the runner's "logits" are the final hidden
    states of the same rows (a long prompt's every-row logits would take gigabytes)."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, *args):
        return self.model(*args)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden


class RunnerSteps:
    """One ModelRunner (its own KV cache) and the sequences a test feeds it."""

    def __init__(
        self, model, num_slots: int = 512, seed: int = 0, native: bool = True, block_size: int = 16
    ) -> None:
        """num_slots: KV cache capacity in tokens. native=False hides the C++ decode
        kernel, so decodes take the PyTorch path; True uses it where it is built (as the
        engine does)."""
        num_blocks = -(-num_slots // block_size) + 1  # block 0 is the null block
        cache = CacheConfig(block_size=block_size, num_blocks=num_blocks)
        dtype = model.norm.weight.dtype  # the activations' dtype (weights may be blocks)
        self.runner = ModelRunner(model, model.arch, dtype, cache, (num_blocks - 1) * block_size)
        self.model = model
        self.native = native
        self.block_size = block_size
        gen = torch.Generator().manual_seed(seed)
        self.free = (torch.randperm(num_blocks - 1, generator=gen) + 1).tolist()
        self.requests: dict[object, Request] = {}
        self.blocks: dict[object, list[int]] = {}

    def _schedule(self, seq, n: int) -> ScheduledRequest:
        req = self.requests[seq]
        blocks = self.blocks[seq]
        while len(blocks) * self.block_size < req.num_computed_tokens + n:
            blocks.append(self.free.pop())
        return ScheduledRequest(req, n, list(blocks))

    def step(
        self,
        prefills: list[tuple[object, list[int]]],
        decodes: list[tuple[object, int]] = (),
        every_row: bool | str = False,
    ) -> torch.Tensor:
        """One forward pass: each prefill computes its ids (a new prompt, or the next
        chunk of one), each decode its one token. Returns float32 logits of each entry's
        last new token (entries in the order given, prefills first), or of every new
        token (T, vocab) when every_row, or final hidden states (T, hidden) when
        every_row == "hidden". Mutates the sequences' requests and the KV cache."""
        scheduled = []
        for seq, ids in prefills:
            if seq not in self.requests:
                self.requests[seq] = Request(
                    request_id=str(seq),
                    parent_id=str(seq),
                    index=0,
                    prompt_token_ids=[],
                    params=SamplingParams(temperature=0.0),
                    max_tokens=1 << 20,
                )
                self.blocks[seq] = []
            req = self.requests[seq]
            assert not req.output_token_ids, "a prompt chunk after a decode"
            req.prompt_token_ids.extend(ids)
            req.wants_prompt_logprobs = bool(every_row)
            scheduled.append(self._schedule(seq, len(ids)))
        for seq, token in decodes:
            self.requests[seq].output_token_ids.append(token)
            scheduled.append(self._schedule(seq, 1))
        probe = every_row == "hidden"
        with contextlib.ExitStack() as stack:
            if not self.native:
                stack.enter_context(
                    mock.patch(
                        "tokenmill.model.layers.attention.inference_kernels", lambda *t: None
                    )
                )
            if probe:
                self.runner.model = _HiddenProbe(self.model)
                stack.callback(setattr, self.runner, "model", self.model)
            out = self.runner.execute(SchedulerOutput(scheduled=scheduled))
        rows = []
        for s, part in zip(scheduled, out.per_request, strict=True):
            s.request.num_computed_tokens += s.num_new_tokens
            if every_row and part.prompt_rows is not None:
                rows.append(out.logits[part.prompt_rows[0] : part.prompt_rows[1]])
            assert part.sample_row is not None
            rows.append(out.logits[part.sample_row : part.sample_row + 1])
        return torch.cat(rows)

    def greedy(
        self, prompts: list[list[int]], max_new_tokens: int, eos: set[int]
    ) -> list[list[int]]:
        """Greedy continuations of all prompts together: one step prefilling them all,
        then batched decodes; a sequence leaves the batch after its EOS."""
        first = self.step([(i, p) for i, p in enumerate(prompts)]).argmax(-1).tolist()
        outs = [[t] for t in first]
        while True:
            live = [i for i, o in enumerate(outs) if len(o) < max_new_tokens and o[-1] not in eos]
            if not live:
                return outs
            nxt = self.step([], [(i, outs[i][-1]) for i in live]).argmax(-1).tolist()
            for i, t in zip(live, nxt, strict=True):
                outs[i].append(t)
