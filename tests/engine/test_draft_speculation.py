"""Draft-model speculation on the packaged SmolLM2: greedy output identical with it on and
off (target float32, draft the packaged Q4_1 blocks of the same model, the pairing
benchmarks/speculative_draft.py measures), the spec counters count it, the draft caches
are freed, and a draft with another tokenizer (Gemma 3) is refused at start."""

from __future__ import annotations

import pytest

from tokenmill import LLM
from tokenmill.errors import ConfigError
from tokenmill.sampling_params import SamplingParams

pytestmark = pytest.mark.slow  # two real models per engine

COPY = [
    {
        "role": "user",
        "content": "Repeat the following text exactly:\n\nThe paged KV cache stores keys and "
        "values in fixed-size blocks, so that sequences of different lengths share one pool.",
    }
]
FREE = [{"role": "user", "content": "Name three colours."}]
COMMON = {"dtype": "float32", "kv_cache_memory_gib": 0.1, "max_model_len": 512}


def test_greedy_output_is_identical_with_a_quantized_draft():
    plain = LLM(**COMMON)
    spec = LLM(speculative="draft:smollm2-135m-instruct", **COMMON)
    params = [
        SamplingParams(temperature=0.0, max_tokens=24),
        SamplingParams(temperature=0.0, max_tokens=16, logprobs=1),
    ]
    want = plain.chat([COPY, FREE], params)
    got = spec.chat([COPY, FREE], params)
    for a, b in zip(want, got, strict=True):
        assert b.outputs[0].token_ids == a.outputs[0].token_ids
        assert b.outputs[0].finish_reason == a.outputs[0].finish_reason
    st = spec.stats()
    # Q4_1 and float32 weights of one model mostly agree on the argmax.
    assert st.spec_draft_tokens > 0 and st.spec_acceptance_rate > 0.5
    assert st.tokens_per_sequence_step > 1.5
    assert spec.engine.speculator.draft.caches == {}
    assert st.kv_blocks_used == 0


def test_a_draft_with_another_tokenizer_is_refused():
    with pytest.raises(ConfigError, match="does not match the target") as err:
        LLM(speculative="draft:gemma3-270m", kv_cache_memory_gib=0.1, max_model_len=512)
    assert err.value.setting == "speculative"
