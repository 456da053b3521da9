"""Speed must not buy wrong tokens: int8 stays close to float32 on real text.

int8's logits and greedy choices against float32 on fixed chat prompts are checked with
every other precision in tests/model/test_smollm_parity.py (tolerances and measured
rates in tests/model/precisions.py)."""

import math
from pathlib import Path

import pytest

from tokenmill import LLM, SamplingParams

# ~900 tokens of fixed English text (an excerpt of the GNU GPL v3, shipped for this).
TEXT = (Path(__file__).parents[2] / "benchmarks" / "data" / "gpl3_excerpt.txt").read_text()[:4500]


def perplexity(llm: LLM) -> float:
    out = llm.generate(TEXT, SamplingParams(max_tokens=0, prompt_logprobs=0))[0]
    lps = [pos[t].logprob for t, pos in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:])]
    return math.exp(-sum(lps) / len(lps))


@pytest.fixture(scope="module")
def llm_int8():
    return LLM(quantization="int8", kv_cache_memory_gib=0.1, max_model_len=2048)


def test_int8_perplexity_close_to_float32(llm32, llm_int8):
    # Measured on the full excerpt (1,931 tokens): float32 20.48, int8 21.23 (+3.7%).
    p32, p8 = perplexity(llm32), perplexity(llm_int8)
    assert 5.0 < p32 < 100.0
    print(f"perplexity float32 {p32:.3f} int8 {p8:.3f}")
    assert abs(p8 / p32 - 1.0) < 0.06, (p32, p8)


def test_int8_greedy_is_batch_invariant(llm_int8):
    greedy = SamplingParams(temperature=0.0, max_tokens=16)
    prompts = ["The capital of France is", "Water boils at", "My favourite colour is"]
    alone = [llm_int8.generate(p, greedy)[0].outputs[0].token_ids for p in prompts]
    batch = [o.outputs[0].token_ids for o in llm_int8.generate(prompts * 4, greedy)]
    assert batch[:3] == alone and batch[9:] == alone
