"""The offline API: `LLM(...).generate(prompts, params)`, vLLM's shape."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from tokenmill.config import EngineConfig
from tokenmill.config.setting import build, settings_of
from tokenmill.engine.core import EngineCore, EngineStats
from tokenmill.engine.outputs import Delta, RequestOutput
from tokenmill.engine.request import GenerationRequest
from tokenmill.sampling_params import SamplingParams

Message = dict[str, object]
OnDelta = Callable[[int, Delta], None]
"""Called with (prompt index, delta) as text is produced."""


class LLM:
    """Loads a model once and runs batches of prompts to completion.

    `model=None` serves the packaged default model. Other keywords are the engine's
    settings by their flag names (`dtype`, `quantization`, `max_num_seqs`,
    `kv_cache_memory_gib`, ...; see `tokenmill serve --help`). Unlike the server, the
    offline LLM queues without limit unless `max_queue` is given.
    """

    def __init__(self, model: str | None = None, **settings: Any):
        settings.setdefault("max_queue", None)
        known = {s.name for s in settings_of(EngineConfig)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TypeError(f"LLM() got unknown settings {unknown}; known: {sorted(known)}")
        config = build(EngineConfig, {"model": model, **settings})
        self.engine = EngineCore(config)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        """An LLM over a config already built (the CLI's)."""
        llm = cls.__new__(cls)
        llm.engine = EngineCore(config)
        llm.tokenizer = llm.engine.tokenizer
        llm._ids = itertools.count()
        return llm

    def default_sampling_params(self, **given: Any) -> SamplingParams:
        """SamplingParams with the model's defaults (its generation config) for every
        sampling field not given, and max_tokens up to --default-max-tokens; what
        `generate` uses when `params` is None."""
        given.setdefault("max_tokens", None)
        return self.engine.sampling_defaults.params(**given)

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[int] | Sequence[list[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text or token ids); outputs come back in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        items = [(p, None) if isinstance(p, str) else (None, list(p)) for p in prompts]
        return self._run(items, params, on_delta)

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        on_delta: OnDelta | None = None,
    ) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation and complete it."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        items = []
        for conv in convs:
            text = self.tokenizer.apply_chat_template(conv, add_generation_prompt=True)
            items.append((text, self.tokenizer.encode(text, add_special_tokens=False)))
        return self._run(items, params, on_delta)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _run(self, items, params, on_delta: OnDelta | None) -> list[RequestOutput]:
        if params is None:
            params = self.default_sampling_params()
        plist = list(params) if isinstance(params, Sequence) else [params] * len(items)
        if len(plist) != len(items):
            raise ValueError("give one SamplingParams, or one per prompt")
        ids = [f"offline-{next(self._ids)}" for _ in items]
        index = {rid: i for i, rid in enumerate(ids)}
        final: dict[str, RequestOutput] = {}

        def deliver(outputs: list[RequestOutput]) -> None:
            for out in outputs:
                if on_delta is not None:
                    for delta in out.deltas:
                        on_delta(index[out.request_id], delta)
                if out.finished:
                    final[out.request_id] = out

        try:
            for rid, (text, tok_ids), p in zip(ids, items, plist):
                self.engine.add_request(GenerationRequest(rid, p, tok_ids, text))
            self.engine.run(lambda idle: not idle, deliver)
        except BaseException:  # an invalid prompt, or Ctrl-C: leave nothing queued
            for rid in ids:
                if rid not in final:
                    self.engine.abort(rid)
            raise
        return [final[rid] for rid in ids]
