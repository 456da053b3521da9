"""Gemma 3 through the real engine (scheduler, chunked prefill, paged KV cache with
prefix caching, the native decode kernel) against transformers' greedy tokens, on
prompts longer than the sliding window."""

from __future__ import annotations

import pytest
import torch

from tests.gemma.conftest import GEMMA_NAME
from tests.gemma.test_parity import long_text
from tokenmill.engine.llm import LLM
from tokenmill.sampling_params import SamplingParams

pytestmark = pytest.mark.slow

NEW_TOKENS = 32
BLOCK = 16


@pytest.fixture(scope="module")
def llm(gemma_file) -> LLM:
    # 256-token steps split a 900-token prompt into four chunks, so later chunks attend
    # to a cached context longer than the window.
    return LLM(
        GEMMA_NAME,
        dtype="float32",
        max_model_len=2048,
        block_size=BLOCK,
        num_kv_blocks=512,
        max_num_batched_tokens=256,
    )


@pytest.fixture(scope="module")
def long_prompts(llm) -> dict[str, list[int]]:
    """Two prompts sharing their first 600 tokens, both longer than the window."""
    base = llm.tokenizer.encode(long_text())
    other = llm.tokenizer.encode(" Which box holds the most marbles, and why?", False)
    shared = base[:600]
    return {"a": base, "b": shared + other + base[600:800] + other}


def hf_continuation(hf_gemma, ids: list[int], eos: list[int]) -> list[int]:
    with torch.inference_mode():
        out = hf_gemma.generate(
            torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            eos_token_id=eos,
            pad_token_id=0,
        )
    return out[0, len(ids) :].tolist()


def greedy() -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS)


def test_engine_greedy_matches_transformers_past_the_window(llm, hf_gemma, long_prompts):
    eos = sorted(llm.engine.eos_token_ids)
    first = llm.generate([long_prompts["a"]], greedy())[0]
    assert len(long_prompts["a"]) > 512 and first.num_cached_tokens == 0
    expected_a = hf_continuation(hf_gemma, long_prompts["a"], eos)
    assert first.outputs[0].token_ids == expected_a

    # b shares a's first 600 tokens: 37 full blocks come from the prefix cache, and the
    # rest is computed over them, past the window.
    second = llm.generate([long_prompts["b"]], greedy())[0]
    assert second.num_cached_tokens == 600 // BLOCK * BLOCK
    assert second.outputs[0].token_ids == hf_continuation(hf_gemma, long_prompts["b"], eos)

    # a again, now almost wholly cached: the same tokens.
    again = llm.generate([long_prompts["a"]], greedy())[0]
    assert again.num_cached_tokens >= len(long_prompts["a"]) // BLOCK * BLOCK - BLOCK
    assert again.outputs[0].token_ids == expected_a
    assert len(expected_a) == NEW_TOKENS


def test_engine_batches_long_and_short_together(llm, long_prompts):
    """A long and a short prompt in one batch get what each gets alone."""
    short = llm.tokenizer.encode("The capital of France is")
    alone = [
        llm.generate([p], greedy())[0].outputs[0].token_ids for p in (long_prompts["b"], short)
    ]
    together = llm.generate([long_prompts["b"], short], greedy())
    assert [o.outputs[0].token_ids for o in together] == alone


def test_chat_through_the_engine_stops_at_end_of_turn(llm):
    """The chat template's turn markers reach the model as single tokens, and a reply
    ends at <end_of_turn> (an EOS for Gemma) or at max_tokens."""
    tok = llm.tokenizer
    out = llm.chat(
        [{"role": "user", "content": "Say hello."}], SamplingParams(temperature=0.0, max_tokens=64)
    )[0]
    ids = out.prompt_token_ids
    start, end = tok.encode("<start_of_turn>", False), tok.encode("<end_of_turn>", False)
    assert ids[:2] == [tok.bos_token_id, *start] and ids.count(end[0]) == 1
    assert out.outputs[0].finish_reason in ("stop", "length")
    if out.outputs[0].finish_reason == "stop":
        assert out.outputs[0].token_ids[-1] in llm.engine.eos_token_ids
