"""Per-request generation controls, validated on construction."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from tokenmill.errors import InvalidRequestError

StructuredKind = Literal["json_object", "json_schema", "regex", "choice", "grammar", "tag"]


@dataclass(frozen=True)
class StructuredSpec:
    """A constraint on what a request may generate; the engine compiles it to a grammar.

    `kind` says how to read `value`: "json_object" (any JSON object; value unused),
    "json_schema" (a JSON Schema, serialised), "regex", "choice" (a JSON list of the
    allowed strings), "grammar" (EBNF, as xgrammar reads it) or "tag" (a serialised
    structural tag: free text until a trigger, then a schema; see docs/tool_calling.md).
    Equal specs share one compiled grammar.
    """

    kind: StructuredKind
    value: str = ""
    param: str = field(default="response_format", compare=False)
    """The API field that carried it: compile errors name it."""


@dataclass(frozen=True)
class BeamSpec:
    """Beam search (vLLM's `use_beam_search`), scored as transformers' `generate(
    num_beams=width, do_sample=False)`: a finished hypothesis scores its summed token
    logprobs over (generated tokens, EOS included) ** length_penalty."""

    width: int
    """Beams kept at every step (`best_of`, else `n`); the best `n` are returned."""
    length_penalty: float = 1.0
    """Exponent of the length that divides a hypothesis' score; > 0 favours longer ones."""
    early_stopping: bool | Literal["never"] = False
    """True: stop once `width` hypotheses finished. False: stop once no live beam can
    beat the worst finished one at its current length. "never": as False, but with the
    best length still possible when length_penalty > 0 (transformers' semantics)."""

    def __post_init__(self) -> None:
        if self.width < 1:
            raise InvalidRequestError(
                f"the beam width (best_of, else n) must be at least 1, got {self.width}.",
                param="best_of",
            )
        if self.early_stopping not in (True, False, "never"):
            raise InvalidRequestError(
                f'early_stopping must be true, false or "never", got {self.early_stopping!r}.',
                param="early_stopping",
            )


BEAM_NEUTRAL = {
    "temperature": 0.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
}
"""What beam search needs of the sampling fields a client left unset: it ranks the
model's own log-probabilities, so a model's sampling defaults must not apply."""


@dataclass
class SamplingParams:
    """How one request is sampled and when it stops.

    Field names and meanings follow vLLM's SamplingParams, which follows OpenAI's API.
    Validation happens in `__post_init__`; an out-of-range value raises
    InvalidRequestError naming the field.
    """

    n: int = 1
    """Completions to generate for the prompt."""
    max_tokens: int | None = 16
    """New tokens at most; None means up to the context length."""
    min_tokens: int = 0
    """EOS and stop token ids are ignored until this many tokens exist."""
    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    """Nucleus mass in (0, 1]."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 or -1 disables."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens seen in prompt or output (CTRL-style, divides positive logits)."""
    presence_penalty: float = 0.0
    """Subtracted once from the logit of every token already generated."""
    frequency_penalty: float = 0.0
    """Subtracted per occurrence of a token already generated."""
    logit_bias: dict[int, float] | None = None
    """Added to the logits of the given token ids before sampling."""
    seed: int | None = None
    """Makes sampling reproducible whatever else shares the batch."""
    stop: list[str] = field(default_factory=list)
    """Strings that end generation; never included in the output text."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end generation besides EOS."""
    ignore_eos: bool = False
    """Keep going past EOS (benchmarks with fixed output lengths)."""
    logprobs: int | None = None
    """Return the sampled token's logprob and this many top alternatives."""
    prompt_logprobs: int | None = None
    """Return logprobs of the prompt tokens (first is None) with this many alternatives."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the returned text."""
    include_stop_str_in_output: bool = False
    structured: StructuredSpec | None = None
    """Constrain the output to a grammar (structured output, tool calls)."""
    beam: BeamSpec | None = None
    """Beam search instead of sampling; the best `n` of `beam.width` beams are returned."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in (self.stop or [])]
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.n < 1:
            raise InvalidRequestError(f"n must be at least 1, got {self.n}.", param="n")
        if self.max_tokens is not None and self.max_tokens < 0:
            raise InvalidRequestError(
                f"max_tokens must be at least 1, got {self.max_tokens}.", param="max_tokens"
            )
        if self.min_tokens < 0:
            raise InvalidRequestError("min_tokens must be >= 0.", param="min_tokens")
        if self.temperature < 0:
            raise InvalidRequestError(
                f"temperature must be >= 0, got {self.temperature}.", param="temperature"
            )
        if not 0.0 < self.top_p <= 1.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}.", param="top_p")
        if self.top_k < -1:
            raise InvalidRequestError(
                f"top_k must be -1, 0 (disabled) or positive, got {self.top_k}.", param="top_k"
            )
        if not 0.0 <= self.min_p <= 1.0:
            raise InvalidRequestError(f"min_p must be in [0, 1], got {self.min_p}.", param="min_p")
        if self.repetition_penalty <= 0:
            raise InvalidRequestError(
                f"repetition_penalty must be > 0, got {self.repetition_penalty}.",
                param="repetition_penalty",
            )
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not -2.0 <= value <= 2.0:
                raise InvalidRequestError(f"{name} must be in [-2, 2], got {value}.", param=name)
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 20:
                raise InvalidRequestError(f"{name} must be in [0, 20], got {value}.", param=name)
        if self.structured is not None and (self.ignore_eos or self.min_tokens):
            raise InvalidRequestError(
                "ignore_eos and min_tokens cannot be combined with structured output: the "
                "grammar decides where the output ends. Leave them unset.",
                param="ignore_eos" if self.ignore_eos else "min_tokens",
            )
        if self.beam is not None:
            self._check_beam(self.beam)
        if any(not s for s in self.stop):
            raise InvalidRequestError("stop strings must be non-empty.", param="stop")
        if self.logit_bias:
            self.logit_bias = {int(k): float(v) for k, v in self.logit_bias.items()}
            for tok, bias in self.logit_bias.items():
                if not -100.0 <= bias <= 100.0:
                    raise InvalidRequestError(
                        f"logit_bias values must be in [-100, 100], got {bias} for token {tok}.",
                        param="logit_bias",
                    )

    def _check_beam(self, beam: BeamSpec) -> None:
        # As vLLM (v0) answers: beam search ranks the model's log-probabilities, so a
        # field that reshapes or samples from them has no meaning there.
        if beam.width < self.n:
            raise InvalidRequestError(
                f"best_of ({beam.width}) must be at least n ({self.n}) with beam search: "
                "the best n of best_of beams are returned.",
                param="best_of",
            )
        if not self.greedy:
            raise InvalidRequestError(
                f"temperature must be 0 (or unset) with use_beam_search, got {self.temperature}.",
                param="temperature",
            )
        conflicts = {
            "top_p": self.top_p != 1.0,
            "top_k": self.top_k not in (0, -1),
            "min_p": self.min_p != 0.0,
            "repetition_penalty": self.repetition_penalty != 1.0,
            "presence_penalty": self.presence_penalty != 0.0,
            "frequency_penalty": self.frequency_penalty != 0.0,
            "logit_bias": bool(self.logit_bias),
            "min_tokens": self.min_tokens != 0,
            "stop": bool(self.stop),
            "stop_token_ids": bool(self.stop_token_ids),
            "logprobs": self.logprobs is not None,
            "prompt_logprobs": self.prompt_logprobs is not None,
            "ignore_eos": self.ignore_eos,
            (self.structured.param if self.structured else "response_format"): (
                self.structured is not None
            ),
            "max_tokens": self.max_tokens == 0,
        }
        for name, bad in conflicts.items():
            if bad:
                raise InvalidRequestError(
                    f"{name} is not supported with use_beam_search: leave it unset, or "
                    "drop use_beam_search. Beam search ranks the model's own "
                    "log-probabilities and ends hypotheses at EOS or max_tokens.",
                    param=name,
                )

    @property
    def greedy(self) -> bool:
        """True when the argmax is taken (temperature 0)."""
        return self.temperature < 1e-5

    def choice_seed(self, index: int) -> int:
        """The seed of completion `index` when `seed` is set: a hash of (seed, index), so
        requests with nearby seeds share no samples (seed + i would make seed=0 and
        seed=1 at n=100 share 99 of them)."""
        digest = hashlib.blake2b(f"{self.seed}:{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") & ((1 << 63) - 1)

    def clone(self, **changes) -> SamplingParams:
        """A copy with `changes` applied (validated again)."""
        values = {f: getattr(self, f) for f in self.__dataclass_fields__}
        values.update(changes)
        return SamplingParams(**values)


@dataclass(frozen=True)
class SamplingDefaults:
    """What a request gets for the sampling fields it leaves unset: the model's own
    generation config where it has one, else OpenAI's defaults. `max_tokens` is not
    here: an omitted max_tokens stays None and the engine caps it (default_max_tokens)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> SamplingDefaults:
        """Defaults from a generation config (unknown keys ignored, like transformers')."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (values or {}).items() if k in names and v is not None})

    def params(self, **given: Any) -> SamplingParams:
        """SamplingParams from `given`, where a None or absent sampling field takes this
        default. Raises InvalidRequestError for invalid values."""
        for f in fields(self):
            if given.get(f.name) is None:
                given[f.name] = getattr(self, f.name)
        return SamplingParams(**given)
