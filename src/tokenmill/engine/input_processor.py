"""Admission: every check a request passes before it is queued, in one place.

Like vLLM v1's input processor: prompt presence, vocabulary range, context length,
max_tokens (an explicit value beyond the context is refused, an omitted one is
capped), token ids inside the sampling params, and the per-request limits (n, stop
strings, what the server could ever hold). Nothing is truncated silently: each refusal
is an InvalidRequestError or ContextLengthError naming the field.

The cheap checks come first. A prompt's text is measured in characters before it is
tokenized: no token spells more than `max_token_chars` characters, so a text longer than
the context times that cannot fit, and is refused without paying for its tokenization.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config import LimitsConfig
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import ContextLengthError, InvalidRequestError
from tokenmill.sampling_params import SamplingParams

NORMALIZER_SLACK = 4
"""A tokenizer that normalizes text (NFKC, say) may shorten it before splitting it; the
character bound then allows this many times more, to stay a bound."""


@dataclass(frozen=True)
class AdmittedPrompt:
    """A request that passed admission: its token ids and resolved token budget."""

    token_ids: list[int]
    max_tokens: int
    """New tokens allowed, already resolved against the context length."""


@dataclass(frozen=True)
class Capacity:
    """What the engine can ever hold at once."""

    max_sequences: int | None = None
    """Sequences running plus queued at most (max_num_seqs + max_queue); None: no limit.
    (One sequence of the whole context always fits the KV pool: the runner checks it.)"""


def max_token_chars(tokenizer, vocab_size: int) -> int:
    """The most characters one token's text can have (special tokens spelled out)."""
    longest = max(
        (len(tokenizer.decode([i], skip_special_tokens=False)) for i in range(vocab_size)),
        default=1,
    )
    if getattr(getattr(tokenizer, "backend", None), "normalizer", None) is not None:
        longest *= NORMALIZER_SLACK
    return max(1, longest)


def lone_surrogate_at(text: str) -> int | None:
    """Index of the first lone UTF-16 surrogate in `text` (JSON's "\\ud800" decodes to
    one), which no tokenizer can encode; None if there is none."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(text: str, param: str) -> None:
    """Raises a 400 naming `param` if `text` holds a lone surrogate."""
    at = lone_surrogate_at(text)
    if at is not None:
        raise InvalidRequestError(
            f"{param} contains a lone UTF-16 surrogate (U+{ord(text[at]):04X} at character "
            f"{at}), which is not valid Unicode text. Send well-formed UTF-8.",
            param=param,
        )


class InputProcessor:
    """Validates GenerationRequests against one model's tokenizer, context and limits.
    Stateless apart from the tokenizer, which it only reads."""

    def __init__(
        self,
        tokenizer,
        vocab_size: int,
        max_model_len: int,
        default_max_tokens: int,
        limits: LimitsConfig | None = None,
        capacity: Capacity | None = None,
    ):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.default_max_tokens = default_max_tokens
        self.limits = limits or LimitsConfig()
        self.capacity = capacity or Capacity()
        self.max_prompt_chars = max_model_len * max_token_chars(tokenizer, vocab_size)
        """Longer prompt text cannot fit the context whatever it says (see module doc)."""

    def process(self, req: GenerationRequest) -> AdmittedPrompt:
        """The request's token ids and max_tokens; raises on anything unservable."""
        self.check_params(req.params)
        ids = self._token_ids(req)
        max_tokens = self._max_tokens(len(ids), req.params, req.prompt_param)
        self._check_param_token_ids(req.params)
        return AdmittedPrompt(ids, max_tokens)

    def check_prompt_text(self, text: str, param: str) -> None:
        """The checks a prompt's text must pass before it is worth tokenizing: valid
        Unicode, and not longer than any prompt that fits the context."""
        check_text(text, param)
        if len(text) > self.max_prompt_chars:
            raise ContextLengthError(
                f"This model's maximum context length is {self.max_model_len} tokens, and "
                f"the {param} has {len(text)} characters: more than any {self.max_model_len} "
                f"tokens can spell (at most {self.max_prompt_chars}). Shorten the {param}.",
                param=param,
            )

    def check_params(self, params: SamplingParams) -> None:
        """The per-request limits on the sampling params (n, stop strings, capacity)."""
        limits = self.limits
        if params.beam is not None and params.beam.width > limits.max_n:
            raise InvalidRequestError(
                f"best_of={params.beam.width} is a wider beam than this server allows "
                f"({limits.max_n}, set by --max-n).",
                param="best_of",
            )
        if params.n > limits.max_n:
            raise InvalidRequestError(
                f"n={params.n} is more completions than this server allows per prompt "
                f"({limits.max_n}, set by --max-n).",
                param="n",
            )
        cap = self.capacity.max_sequences
        seqs = params.beam.width if params.beam is not None else params.n
        if cap is not None and seqs > cap:
            name = "best_of" if params.beam is not None else "n"
            raise InvalidRequestError(
                f"{name}={seqs} sequences can never be held at once: this server runs and "
                f"queues at most {cap} (--max-num-seqs plus --max-queue).",
                param=name,
                code="exceeds_capacity",
            )
        if len(params.stop) > limits.max_stop_strings:
            raise InvalidRequestError(
                f"stop has {len(params.stop)} strings; at most {limits.max_stop_strings} are "
                "allowed (--max-stop-strings).",
                param="stop",
            )
        for i, stop in enumerate(params.stop):
            if len(stop) > limits.max_stop_string_chars:
                raise InvalidRequestError(
                    f"stop[{i}] has {len(stop)} characters; at most "
                    f"{limits.max_stop_string_chars} are allowed (--max-stop-string-chars).",
                    param="stop",
                )
            check_text(stop, "stop")

    def _token_ids(self, req: GenerationRequest) -> list[int]:
        ids = req.prompt_token_ids
        if ids is None:
            if req.prompt is None:
                raise InvalidRequestError(
                    "Either a prompt or prompt token ids is required.", param=req.prompt_param
                )
            self.check_prompt_text(req.prompt, req.prompt_param)
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
