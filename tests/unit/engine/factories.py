"""Factories for engine unit tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import torch

from tokenmill.engine.request import Request
from tokenmill.sampling_params import SamplingParams

_seq = itertools.count()


def make_request(
    prompt_len: int = 10,
    *,
    prompt: list[int] | None = None,
    max_tokens: int = 8,
    priority: int = 0,
    request_id: str | None = None,
    prompt_logprobs: int | None = None,
    parent_id: str | None = None,
    index: int = 0,
    caller: str = "",
) -> Request:
    """A request with prompt tokens 1..prompt_len (or `prompt`), greedy params. Give
    `parent_id` and `index` to make one of a request's n sequences."""
    n = next(_seq)
    ids = list(prompt) if prompt is not None else [1 + i for i in range(prompt_len)]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, prompt_logprobs=prompt_logprobs)
    rid = request_id or (f"{parent_id}#{index}" if parent_id else f"req-{n}")
    return Request(
        request_id=rid,
        parent_id=parent_id or rid,
        index=index,
        prompt_token_ids=ids,
        params=params,
        max_tokens=max_tokens,
        priority=priority,
        arrival_seq=n,
        wants_prompt_logprobs=prompt_logprobs is not None,
        caller=caller,
    )


def make_parent(parent_id: str, n: int, *, caller: str = "", **kwargs) -> list[Request]:
    """The n sequences of one request, arriving together."""
    return [make_request(parent_id=parent_id, index=i, caller=caller, **kwargs) for i in range(n)]


class ByteTokenizer:
    """Token id = byte + 3 (1 is BOS, 2 is EOS): text tests can spell exact strings."""

    BOS, EOS, OFFSET = 1, 2, 3
    eos_token_id = EOS
    all_special_ids = frozenset({BOS, EOS})

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [b + self.OFFSET for b in text.encode("utf-8")]
        return [self.BOS, *ids] if add_special_tokens else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        out = bytearray()
        for i in ids:
            if i >= self.OFFSET:
                out.append(i - self.OFFSET)
            elif not skip_special_tokens:
                out += {self.BOS: b"<s>", self.EOS: b"</s>"}.get(i, b"")
        return out.decode("utf-8", errors="replace")


class ScriptedModel(torch.nn.Module):
    """A stand-in model whose next token depends only on the current one:
    `script[token]` (EOS for tokens not in the script). Touches no KV cache."""

    def __init__(self, script: dict[int, int], vocab_size: int):
        super().__init__()
        self.script = script
        self.vocab_size = vocab_size

    def forward(self, input_ids, positions, attn, kv_caches):
        return input_ids.to(torch.float32)[:, None]  # (T, 1)

    def compute_logits(self, hidden):
        ids = hidden[:, 0].long().tolist()
        logits = torch.zeros(len(ids), self.vocab_size)  # (M, V)
        for row, tok in enumerate(ids):
            logits[row, self.script.get(tok, ByteTokenizer.EOS)] = 10.0
        return logits


class SoftScriptedModel(ScriptedModel):
    """ScriptedModel with a spread distribution: after token t, `script[t]` gets logit
    `margin` and every other token of the script's alphabet 0 (the rest -inf-like), so
    sampled requests have a known, non-degenerate law."""

    def __init__(self, script: dict[int, int], vocab_size: int, margin: float):
        super().__init__(script, vocab_size)
        self.margin = margin
        self.alphabet = torch.tensor(sorted(set(script.values())))

    def compute_logits(self, hidden):
        ids = hidden[:, 0].long().tolist()
        logits = torch.full((len(ids), self.vocab_size), -1e4)  # (M, V)
        logits[:, self.alphabet] = 0.0
        for row, tok in enumerate(ids):
            logits[row, self.script.get(tok, ByteTokenizer.EOS)] = self.margin
        return logits


def make_core(
    text: str = "abcd",
    *,
    num_blocks: int = 64,
    block_size: int = 4,
    max_model_len: int = 64,
    budget: int = 32,
    max_seqs: int = 8,
    max_queue: int | None = None,
    limits=None,
    speculative=None,
    soft_margin: float | None = None,
):
    """An EngineCore over ScriptedModel that, after any prompt ending in a byte of `text`,
    continues with the rest of `text` cyclically. Byte tokens, vocab 259. With
    `soft_margin`, the model is a SoftScriptedModel (sampling has a spread law)."""
    from tokenmill.config import (
        CacheConfig,
        EngineConfig,
        LimitsConfig,
        SchedulerConfig,
        SpeculativeConfig,
    )
    from tokenmill.engine.core import EngineCore
    from tokenmill.model.arch import ArchConfig
    from tokenmill.model.loader import LoadedModel

    ids = ByteTokenizer().encode(text, add_special_tokens=False)
    script = {a: b for a, b in zip(ids, ids[1:] + ids[:1])}
    vocab = 256 + ByteTokenizer.OFFSET
    arch = ArchConfig(
        architecture="llama",
        vocab_size=vocab,
        hidden_size=2,
        intermediate_size=2,
        num_layers=1,
        num_heads=1,
        num_kv_heads=1,
        head_dim=2,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        max_position_embeddings=max_model_len,
        tie_word_embeddings=True,
        eos_token_ids=(ByteTokenizer.EOS,),
    )
    loaded = LoadedModel(
        model=(
            ScriptedModel(script, vocab)
            if soft_margin is None
            else SoftScriptedModel(script, vocab, soft_margin)
        ),
        tokenizer=ByteTokenizer(),
        arch=arch,
        name="scripted",
        path=Path("scripted"),
        dtype=torch.float32,
        max_model_len=max_model_len,
    )
    config = EngineConfig(
        cache=CacheConfig(block_size=block_size, num_blocks=num_blocks),
        scheduler=SchedulerConfig(
            max_num_seqs=max_seqs, max_num_batched_tokens=budget, max_queue=max_queue
        ),
        limits=limits or LimitsConfig(),
        speculative=speculative or SpeculativeConfig(),
    )
    return EngineCore(config, loaded)


def run_core(core, max_steps: int = 1000) -> dict:
    """Steps `core` until idle; returns the final RequestOutput of each request id."""
    final = {}
    for _ in range(max_steps):
        if not core.has_unfinished():
            return final
        for out in core.step():
            if out.finished:
                final[out.request_id] = out
    raise AssertionError("engine did not go idle")
