"""Workloads: the prompts a benchmark sends and how many tokens each should produce.

A workload is built once, before any server is measured, so every peer in a comparison
receives exactly the same requests.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tokenmill.bench.sharegpt import ShareGPTReader, dataset_path, first_exchange
from tokenmill.bench.tokenizer import PromptTokenizer

FIT_TRIES = 10
SHAREGPT_MIN_TOKENS = 4
SHAREGPT_MAX_PROMPT = 1024
SHAREGPT_MAX_TOTAL = 2048


@dataclass(frozen=True)
class BenchRequest:
    """One request of a workload."""

    prompt: str
    prompt_len: int
    """Tokens in `prompt` by the workload's tokenizer (no special tokens, no template)."""
    output_len: int
    """max_tokens to ask for; with ignore_eos the server should produce exactly this many."""

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Workload:
    """A benchmark's requests: one warm-up request, then each level's own requests.

    No request appears twice, so a server's prompt cache cannot turn the warm-up or an
    earlier level into hits that flatter a later level's TTFT.
    """

    warm_up: BenchRequest
    levels: list[list[BenchRequest]]
    """levels[i] holds the requests of the i-th load level, in the order they are sent."""

    @property
    def requests(self) -> list[BenchRequest]:
        """Every request, warm-up first."""
        return [self.warm_up] + [r for level in self.levels for r in level]

    @classmethod
    def split(cls, requests: list[BenchRequest], sizes: list[int]) -> Workload:
        """Take the warm-up from the front of `requests`, then `sizes[i]` for level i.
        Raises ValueError when `requests` is shorter than 1 + sum(sizes)."""
        if len(requests) < 1 + sum(sizes):
            raise ValueError(f"{len(requests)} requests cannot fill 1 + {sum(sizes)}.")
        levels, start = [], 1
        for size in sizes:
            levels.append(requests[start : start + size])
            start += size
        return cls(warm_up=requests[0], levels=levels)


def random_requests(
    tokenizer: PromptTokenizer, num: int, input_len: int, output_len: int, seed: int
) -> list[BenchRequest]:
    """`num` prompts of random tokens, each re-tokenizing to exactly `input_len` tokens
    where the tokenizer allows it (the closest length found otherwise)."""
    if num < 1 or input_len < 1 or output_len < 1:
        raise ValueError("num, input_len and output_len must all be at least 1.")
    rng = random.Random(seed)
    allowed = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids]
    out = []
    for _ in range(num):
        text, length = fit_prompt(tokenizer, rng, allowed, input_len)
        out.append(BenchRequest(prompt=text, prompt_len=length, output_len=output_len))
    return out


def fit_prompt(
    tokenizer: PromptTokenizer, rng: random.Random, allowed: list[int], length: int
) -> tuple[str, int]:
    """Text whose encoding has `length` tokens, built from random ids; returns (text, tokens).

    Decoding and re-encoding random ids merges or splits some of them, so the ids are
    trimmed or topped up and the round trip repeated until the length holds.
    """
    ids = rng.choices(allowed, k=length)
    best: tuple[str, int] | None = None
    for _ in range(FIT_TRIES):
        text = tokenizer.decode(ids)
        got = tokenizer.encode(text)
        if len(got) == length:
            return text, length
        if best is None or abs(len(got) - length) < abs(best[1] - length):
            best = (text, len(got))
        ids = got[:length] if len(got) > length else got + rng.choices(allowed, k=length - len(got))
    assert best is not None
    return best


def sharegpt_requests(
    tokenizer: PromptTokenizer,
    num: int,
    seed: int,
    output_len: int | None = None,
    path: Path | str | None = None,
) -> list[BenchRequest]:
    """`num` first-turn prompts from ShareGPT, shuffled by `seed`, filtered as vLLM does
    (at least 4 tokens each side, prompt <= 1024, prompt + reply <= 2048 tokens).

    Each asks for the length of the recorded reply, or `output_len` when given. Raises
    ValueError when the file holds fewer usable conversations than `num`.
    """
    reader = ShareGPTReader(path if path is not None else dataset_path())
    conversations = [c for c in map(first_exchange, reader) if c is not None]
    random.Random(seed).shuffle(conversations)
    out: list[BenchRequest] = []
    for conv in conversations:
        if len(out) == num:
            break
        prompt_len = len(tokenizer.encode(conv.prompt))
        reply_len = len(tokenizer.encode(conv.reply)) if output_len is None else output_len
        if prompt_len < SHAREGPT_MIN_TOKENS or reply_len < SHAREGPT_MIN_TOKENS:
            continue
        if prompt_len > SHAREGPT_MAX_PROMPT or prompt_len + reply_len > SHAREGPT_MAX_TOTAL:
            continue
        out.append(BenchRequest(prompt=conv.prompt, prompt_len=prompt_len, output_len=reply_len))
    if len(out) < num:
        raise ValueError(
            f"ShareGPT file {reader.path} has only {len(out)} usable conversations "
            f"({reader.records} records parsed); ask for fewer prompts."
        )
    return out
