"""Admission: every check a request passes before it is queued, in one place.

Like vLLM v1's input processor: prompt presence, vocabulary range, context length,
max_tokens (an explicit value beyond the context is refused, an omitted one is
capped), and token ids inside the sampling params. Nothing is truncated silently:
each refusal is an InvalidRequestError or ContextLengthError naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import ContextLengthError, InvalidRequestError
from tokenmill.sampling_params import SamplingParams


@dataclass(frozen=True)
class AdmittedPrompt:
    """A request that passed admission: its token ids and resolved token budget."""

    token_ids: list[int]
    max_tokens: int
    """New tokens allowed, already resolved against the context length."""


class InputProcessor:
    """Validates GenerationRequests against one model's tokenizer and context.
    Stateless apart from the tokenizer, which it only reads."""

    def __init__(self, tokenizer, vocab_size: int, max_model_len: int, default_max_tokens: int):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens

    def process(self, req: GenerationRequest) -> AdmittedPrompt:
        """The request's token ids and max_tokens; raises on anything unservable."""
        ids = self._token_ids(req)
        max_tokens = self._max_tokens(len(ids), req.params, req.prompt_param)
        self._check_param_token_ids(req.params)
        return AdmittedPrompt(ids, max_tokens)

    def _token_ids(self, req: GenerationRequest) -> list[int]:
        ids = req.prompt_token_ids
        if ids is None:
            if req.prompt is None:
                raise InvalidRequestError(
                    "Either a prompt or prompt token ids is required.", param=req.prompt_param
                )
            ids = self.tokenizer.encode(req.prompt, add_special_tokens=True)
        if not ids:
            raise InvalidRequestError(
                f"The prompt is empty: {req.prompt_param} must contain at least one token.",
                param=req.prompt_param,
            )
        for tok in ids:
            if not (isinstance(tok, int) and 0 <= tok < self.vocab_size):
                raise InvalidRequestError(
                    f"Token id {tok!r} is outside the vocabulary [0, {self.vocab_size}).",
                    param=req.prompt_param,
                )
        return list(ids)

    def _max_tokens(self, num_prompt: int, params: SamplingParams, param: str) -> int:
        limit = self.max_model_len
        if params.max_tokens is None:
            if num_prompt >= limit:
                raise ContextLengthError(
                    f"This model's maximum context length is {limit} tokens, and the prompt "
                    f"has {num_prompt} tokens, leaving no room for a completion. Shorten the "
                    f"{param}.",
                    param=param,
                )
            return min(self.default_max_tokens, limit - num_prompt)
        if num_prompt + params.max_tokens > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {num_prompt + params.max_tokens} tokens ({num_prompt} in the "
                f"{param}, {params.max_tokens} for the completion). Reduce the {param} or "
                "max_tokens.",
                param=param,
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
        for name, ids in (
            ("logit_bias", params.logit_bias or {}),
            ("stop_token_ids", params.stop_token_ids),
        ):
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"{name} has token id {bad[0]}, outside the vocabulary [0, {self.vocab_size}).",
                    param=name,
                )
