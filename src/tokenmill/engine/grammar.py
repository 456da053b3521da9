"""Grammars for structured output: compiled once per spec, matched once per sequence.

xgrammar does the work. A `GrammarCache` belongs to one engine, hence to one tokenizer, so
its key is the spec alone; it keeps the most recently used compiled grammars. A
`TokenConstraint` follows one sequence: it fills that sequence's row of a token bitmask
and advances with each token the sampler picks.
"""

from __future__ import annotations

import functools
import json
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch

from tokenmill.errors import InvalidRequestError
from tokenmill.model.tokenizer import Tokenizer
from tokenmill.sampling_params import StructuredSpec

if TYPE_CHECKING:
    import xgrammar as xgr


@functools.cache
def _xgrammar():
    """xgrammar, imported at the first structured request: importing it took a server
    ~1.8 s and ~50 MB of RSS, and most servers never see one. None where the optional
    `structured` extra is not installed (such requests are then refused)."""
    try:
        import xgrammar
    except ImportError:
        return None
    return xgrammar


DEFAULT_CACHE_SIZE = 256
"""Compiled grammars kept; a JSON schema's takes from tens of KB to a few MB."""


class TokenConstraint:
    """The grammar state of one sequence. Not thread-safe; the engine's thread owns it."""

    def __init__(self, compiled: xgr.CompiledGrammar):
        self._matcher = _xgrammar().GrammarMatcher(compiled)

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        """Write the tokens allowed next into `bitmask[row]` (int32, 32 tokens a word);
        mutates only that row."""
        self._matcher.fill_next_token_bitmask(bitmask, row)

    def accept(self, token_id: int) -> None:
        """Advance past `token_id`, which the bitmask allowed; mutates the state.
        A refused token is an engine bug (the mask was not applied): it raises."""
        if not self._matcher.accept_token(token_id):
            raise RuntimeError(f"token {token_id} is outside the request's grammar")

    @property
    def is_terminated(self) -> bool:
        """True once the grammar is complete and its stop token was accepted."""
        return self._matcher.is_terminated()


def allocate_bitmask(rows: int, vocab_size: int) -> torch.Tensor:
    """An all-allowed bitmask for `rows` rows of a `vocab_size` vocabulary."""
    return _xgrammar().allocate_token_bitmask(rows, vocab_size)


def apply_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: list[int]) -> None:
    """Set to -inf, in the given `rows` of `logits` (N, V), every token that row's
    bitmask forbids; `bitmask` has one row per logits row. Mutates `logits`."""
    _xgrammar().apply_token_bitmask_inplace(logits, bitmask, indices=rows)


class GrammarCache:
    """Compiles specs for one tokenizer and keeps the `max_size` most recent results.

    `constraint(spec)` raises InvalidRequestError (naming `spec.param`) when the schema,
    regex or grammar does not compile. Thread-safe: the server compiles on the engine's
    thread, the offline API on the caller's.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        vocab_size: int,
        stop_token_ids: list[int],
        max_size: int = DEFAULT_CACHE_SIZE,
    ):
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        self._compiler: xgr.GrammarCompiler | None = None
        self._cache: OrderedDict[StructuredSpec, xgr.CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self.max_size = max_size
        self.hits = 0
        self.misses = 0

    def constraint(self, spec: StructuredSpec) -> TokenConstraint:
        """A fresh matcher at the start of `spec`'s grammar (compiled or cached)."""
        return TokenConstraint(self.compile(spec))

    def compile(self, spec: StructuredSpec) -> xgr.CompiledGrammar:
        """`spec` compiled, from the cache when there; mutates the cache's order."""
        with self._lock:
            found = self._cache.get(spec)
            if found is not None:
                self._cache.move_to_end(spec)
                self.hits += 1
                return found
            self.misses += 1
            compiled = self._compile(spec)
            self._cache[spec] = compiled
            if len(self._cache) > self.max_size:
                self._cache.popitem(last=False)
            return compiled

    def __len__(self) -> int:
        return len(self._cache)

    def _compiler_for(self, param: str) -> xgr.GrammarCompiler:
        # Built on first use: reading the vocabulary takes ~0.4 s and most servers never
        # see a structured request.
        xgr = _xgrammar()
        if xgr is None:
            raise InvalidRequestError(
                "Structured output and tool calls need the grammar engine, which this "
                "installation lacks: pip install 'tokenmill[structured]'.",
                param=param,
            )
        if self._compiler is None:
            from transformers import PreTrainedTokenizerFast

            hf = PreTrainedTokenizerFast(tokenizer_object=self._tokenizer.backend)
            info = xgr.TokenizerInfo.from_huggingface(
                hf, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids
            )
            self._compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        return self._compiler

    def _compile(self, spec: StructuredSpec) -> xgr.CompiledGrammar:
        compiler = self._compiler_for(spec.param)
        try:
            if spec.kind == "json_object":
                # Not the builtin JSON grammar: that admits any value ("[1]", "2"), and
                # json_object promises an object. Extra keys are what it is for.
                return compiler.compile_json_schema(
                    '{"type": "object"}', any_whitespace=False, strict_mode=False
                )
            if spec.kind == "json_schema":
                return compiler.compile_json_schema(spec.value, any_whitespace=False)
            if spec.kind == "regex":
                return compiler.compile_regex(spec.value)
            if spec.kind == "choice":
                return compiler.compile_grammar(choice_grammar(json.loads(spec.value)))
            if spec.kind == "grammar":
                return compiler.compile_grammar(spec.value)
            if spec.kind == "tag":
                return compiler.compile_structural_tag(spec.value)
        except (RuntimeError, ValueError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise InvalidRequestError(
                f"The {spec.kind.replace('_', ' ')} in `{spec.param}` does not compile: "
                f"{_strip_location(reason)}",
                param=spec.param,
            ) from None
        raise InvalidRequestError(
            f"Unknown structured output kind {spec.kind!r}.", param=spec.param
        )


def choice_grammar(choices: list[str]) -> str:
    """EBNF whose only sentences are the given strings (JSON string literals are valid
    EBNF string literals)."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


def _strip_location(message: str) -> str:
    """xgrammar prefixes messages with '[time] /path/file.cc:line: '; users need the rest."""
    if message.startswith("[") and ": " in message:
        return message.split(": ", 1)[1]
    return message
