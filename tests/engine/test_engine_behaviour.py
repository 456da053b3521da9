"""End-to-end engine behaviour on the real default model."""

import math

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.errors import ContextLengthError, InvalidRequestError, ModelNotFoundError

from .conftest import CHATS, chat

GREEDY = SamplingParams(temperature=0.0, max_tokens=32)


def test_preempted_requests_finish_with_the_same_greedy_output(llm32):
    reference = llm32.chat([chat(c) for c in CHATS[:4]], GREEDY)
    # 39 usable blocks of 4 tokens hold 156 tokens: four ~70-token sequences must fight.
    small = LLM(
        dtype="float32",
        num_kv_blocks=40,
        block_size=4,
        enable_prefix_caching=False,
        max_model_len=128,
    )
    squeezed = small.chat([chat(c) for c in CHATS[:4]], GREEDY)
    assert small.stats().num_preemptions > 0
    for ref, got in zip(reference, squeezed):
        assert got.outputs[0].token_ids == ref.outputs[0].token_ids
    assert small.stats().kv_blocks_used == 0


def test_prefix_cache_computes_only_new_blocks(llm32):
    system = "You are a meticulous assistant. " * 30
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    second = [{"role": "system", "content": system}, {"role": "user", "content": "Bye now"}]
    params = SamplingParams(temperature=0.0, max_tokens=2)
    before = llm32.stats()
    a = llm32.chat(first, params)[0]
    mid = llm32.stats()
    b = llm32.chat(second, params)[0]
    after = llm32.stats()
    n_a, n_b = len(a.prompt_token_ids), len(b.prompt_token_ids)
    assert n_a > 150
    assert mid.prompt_tokens_computed - before.prompt_tokens_computed == n_a
    common = next(
        i for i, (x, y) in enumerate(zip(a.prompt_token_ids, b.prompt_token_ids)) if x != y
    )
    block = 16
    reused = (common // block) * block
    assert b.num_cached_tokens == reused
    assert after.prompt_tokens_computed - mid.prompt_tokens_computed == n_b - reused
    assert after.prefix_cache_hits - mid.prefix_cache_hits == reused


def test_stop_string_ends_text_before_it(llm32):
    full = llm32.chat(chat(CHATS[0]), GREEDY)[0].outputs[0]
    assert "Paris" in full.text
    stopped = llm32.chat(chat(CHATS[0]), GREEDY.clone(stop=["Paris"]))[0].outputs[0]
    assert stopped.finish_reason == "stop" and stopped.stop_reason == "Paris"
    assert stopped.text == full.text[: full.text.index("Paris")]


def test_eos_and_length_finish_reasons(llm32):
    out = llm32.chat(chat(CHATS[0]), GREEDY)[0].outputs[0]
    assert out.finish_reason == "stop" and out.stop_reason is None
    assert out.token_ids[-1] == llm32.tokenizer.eos_token_id
    short = llm32.chat(chat(CHATS[0]), GREEDY.clone(max_tokens=3))[0].outputs[0]
    assert short.finish_reason == "length" and len(short.token_ids) == 3
    cont = llm32.chat(chat(CHATS[0]), GREEDY.clone(max_tokens=12, ignore_eos=True))[0]
    assert len(cont.outputs[0].token_ids) == 12


def test_n_completions_with_seed_are_distinct_and_reproducible(llm32):
    p = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12)
    a = llm32.generate("Once upon a time", p)[0]
    b = llm32.generate("Once upon a time", p)[0]
    assert [o.index for o in a.outputs] == [0, 1, 2]
    assert [o.token_ids for o in a.outputs] == [o.token_ids for o in b.outputs]
    assert len({tuple(o.token_ids) for o in a.outputs}) > 1


def test_logprobs_and_prompt_logprobs(llm32):
    p = SamplingParams(temperature=0.0, max_tokens=4, logprobs=3, prompt_logprobs=2)
    out = llm32.generate("The capital of France is", p)[0]
    comp = out.outputs[0]
    assert len(comp.logprobs) == 4
    for tok, pos in zip(comp.token_ids, comp.logprobs):
        assert tok in pos and pos[tok].rank == 1  # greedy picks the top token
        assert 3 <= len(pos) <= 4
        assert all(lp.logprob <= 0 for lp in pos.values())
    assert math.isclose(
        comp.cumulative_logprob,
        sum(pos[t].logprob for t, pos in zip(comp.token_ids, comp.logprobs)),
    )
    plp = out.prompt_logprobs
    assert len(plp) == len(out.prompt_token_ids) and plp[0] is None
    for tok, pos in zip(out.prompt_token_ids[1:], plp[1:]):
        assert tok in pos and 2 <= len(pos) <= 3


def test_echo_style_request_with_zero_new_tokens(llm32):
    p = SamplingParams(temperature=0.0, max_tokens=0, prompt_logprobs=1)
    out = llm32.generate("One two three four", p)[0]
    assert out.outputs[0].token_ids == [] and out.outputs[0].finish_reason == "length"
    assert len(out.prompt_logprobs) == len(out.prompt_token_ids)


def test_bad_input_raises_typed_errors(llm32):
    with pytest.raises(InvalidRequestError, match="empty"):
        llm32.generate([[]], GREEDY)
    with pytest.raises(ContextLengthError, match="8192"):
        llm32.generate([[1] * 8000], GREEDY.clone(max_tokens=500))
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        llm32.generate("hi", SamplingParams(max_tokens=0))
    with pytest.raises(InvalidRequestError, match="top_p"):
        SamplingParams(top_p=1.5)
    with pytest.raises(ModelNotFoundError, match="smollm2-135m-instruct"):
        LLM(model="no-such-model")
    assert llm32.stats().num_running == 0 and llm32.stats().num_waiting == 0
