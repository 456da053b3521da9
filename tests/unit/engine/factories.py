"""Factories for engine unit tests."""

from __future__ import annotations

import itertools

from tokenmill.engine.request import Request
from tokenmill.sampling_params import SamplingParams

_seq = itertools.count()


def make_request(prompt_len: int = 10, *, prompt: list[int] | None = None, max_tokens: int = 8,
                 priority: int = 0, request_id: str | None = None,
                 prompt_logprobs: int | None = None) -> Request:
    """A request with prompt tokens 1..prompt_len (or `prompt`), greedy params."""
    n = next(_seq)
    ids = list(prompt) if prompt is not None else [1 + i for i in range(prompt_len)]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0,
                            prompt_logprobs=prompt_logprobs)
    rid = request_id or f"req-{n}"
    return Request(
        request_id=rid, parent_id=rid, index=0, prompt_token_ids=ids, params=params,
        max_tokens=max_tokens, priority=priority, arrival_seq=n,
        wants_prompt_logprobs=prompt_logprobs is not None,
    )
