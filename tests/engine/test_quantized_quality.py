"""Speed must not buy wrong tokens: int8 stays close to float32 on real text."""

import math

import pytest

from tokenmill import LLM, SamplingParams

TEXT = (
    "The river rose slowly through the night, and by morning the low fields beside the "
    "mill were under water. The miller had seen floods before; he moved the sacks of "
    "grain to the loft, tied the boat to the door, and waited for the rain to stop. "
    "His daughter counted the hours by the church bell across the valley."
)


def perplexity(llm: LLM) -> float:
    out = llm.generate(TEXT, SamplingParams(max_tokens=0, prompt_logprobs=0))[0]
    lps = [pos[t].logprob for t, pos in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])]
    return math.exp(-sum(lps) / len(lps))


@pytest.fixture(scope="module")
def llm_int8():
    return LLM(quantization="int8", kv_cache_memory_gib=0.1, max_model_len=1024)


def test_int8_perplexity_within_one_percent_of_float32(llm32, llm_int8):
    p32, p8 = perplexity(llm32), perplexity(llm_int8)
    assert 1.0 < p32 < 1000.0
    assert abs(p8 / p32 - 1.0) < 0.01, (p32, p8)


def test_int8_greedy_is_batch_invariant(llm_int8):
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    prompts = ["The capital of France is", "Water boils at", "My favourite colour is"]
    alone = [llm_int8.generate(p, greedy)[0].outputs[0].token_ids for p in prompts]
    batch = [o.outputs[0].token_ids for o in llm_int8.generate(prompts * 4, greedy)]
    assert batch[:3] == alone and batch[9:] == alone
