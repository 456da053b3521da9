"""The offline API: `LLM(...).generate(prompts, params)`, vLLM's shape."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from tokenmill.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from tokenmill.engine.core import EngineCore, EngineStats
from tokenmill.engine.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams

Message = dict[str, object]


class LLM:
    """Loads a model once and runs batches of prompts to completion.

    `model=None` serves the embedded default model. Extra keyword arguments set
    engine limits: block_size, kv_cache_memory_gib, num_blocks, enable_prefix_caching,
    max_num_seqs, max_num_batched_tokens, max_waiting, num_threads.
    """

    def __init__(self, model: str | None = None, dtype: str = "auto",
                 max_model_len: int | None = None, quantization: str | None = None,
                 **engine_kwargs):
        cache = CacheConfig(
            block_size=engine_kwargs.pop("block_size", 16),
            memory_gib=engine_kwargs.pop("kv_cache_memory_gib", 1.0),
            num_blocks=engine_kwargs.pop("num_blocks", None),
            enable_prefix_caching=engine_kwargs.pop("enable_prefix_caching", True),
        )
        sched = SchedulerConfig(
            max_num_seqs=engine_kwargs.pop("max_num_seqs", 64),
            max_num_batched_tokens=engine_kwargs.pop("max_num_batched_tokens", 512),
            max_waiting=engine_kwargs.pop("max_waiting", 1 << 20),
        )
        num_threads = engine_kwargs.pop("num_threads", None)
        if engine_kwargs:
            raise TypeError(f"unknown LLM arguments: {sorted(engine_kwargs)}")
        config = EngineConfig(
            ModelConfig(model, dtype, max_model_len, quantization), cache, sched, num_threads
        )
        self.engine = EngineCore(config)
        self.tokenizer = self.engine.tokenizer
        self._ids = itertools.count()

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[list[int]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Complete each prompt (text or token ids); outputs come back in prompt order."""
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        items = []
        for p in prompts:
            if isinstance(p, str):
                items.append((p, None))
            else:
                items.append((None, list(p)))
        return self._run(items, params)

    def chat(
        self,
        messages: list[Message] | list[list[Message]],
        params: SamplingParams | Sequence[SamplingParams] | None = None,
    ) -> list[RequestOutput]:
        """Apply the model's chat template to each conversation and complete it."""
        convs = [messages] if messages and isinstance(messages[0], dict) else messages
        items = []
        for conv in convs:
            text = self.tokenizer.apply_chat_template(conv, add_generation_prompt=True)
            items.append((text, self.tokenizer.encode(text, add_special_tokens=False)))
        return self._run(items, params)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def _run(self, items, params) -> list[RequestOutput]:
        if params is None:
            params = SamplingParams()
        plist = list(params) if isinstance(params, Sequence) else [params] * len(items)
        if len(plist) != len(items):
            raise ValueError("give one SamplingParams, or one per prompt")
        ids = []
        try:
            for (text, tok_ids), p in zip(items, plist):
                rid = f"offline-{next(self._ids)}"
                self.engine.add_request(rid, p, prompt=text, prompt_token_ids=tok_ids)
                ids.append(rid)
        except Exception:
            for rid in ids:
                self.engine.abort(rid)
            raise
        final: dict[str, RequestOutput] = {}
        while self.engine.has_unfinished():
            for out in self.engine.step():
                if out.finished:
                    final[out.request_id] = out
        return [final[rid] for rid in ids]
