"""Prompt-lookup speculation on real weights: greedy output identical with it on and off
(the packaged SmolLM2 and a tiny random Llama), and seeded sampling distributed as
without it (chi-square over many seeds, tiny model)."""

from __future__ import annotations

import pytest
from scipy import stats

from tests.model import tiny
from tests.model.test_tiny_models import make_hf_model
from tokenmill import LLM
from tokenmill.sampling_params import SamplingParams

pytestmark = pytest.mark.slow  # the real model (and, for e2e, servers)

PARAGRAPH = (
    "The paged KV cache stores keys and values in fixed-size blocks, so that sequences of "
    "different lengths can share one pool of memory without fragmentation. Each block holds "
    "sixteen tokens, and a block table maps a sequence's positions to its blocks."
)
COPY = [{"role": "user", "content": "Repeat the following text exactly:\n\n" + PARAGRAPH}]
CODE = [
    {
        "role": "user",
        "content": "Rename the variable x to total in this code:\n\n"
        "def add_all(values):\n    x = 0\n    for v in values:\n        x = x + v\n"
        "    return x\n",
    }
]
FREE = [{"role": "user", "content": "Name three colours."}]


def _pair(**settings):
    common = {"dtype": "float32", "kv_cache_memory_gib": 0.25, "max_model_len": 1024}
    return LLM(**common, **settings), LLM(**common, speculative="ngram", **settings)


@pytest.fixture(scope="module")
def smollm_pair():
    return _pair()


def test_smollm_greedy_is_identical_with_fewer_steps(smollm_pair):
    plain, spec = smollm_pair
    params = [
        SamplingParams(temperature=0.0, max_tokens=64),
        SamplingParams(temperature=0.0, max_tokens=48, logprobs=2),
        SamplingParams(temperature=0.0, max_tokens=48, presence_penalty=0.5),
        SamplingParams(temperature=0.0, max_tokens=64, stop=["fragmentation"]),
    ]
    convs = [COPY, CODE, COPY, COPY]
    before = spec.stats()
    want = plain.chat(convs, params)
    got = spec.chat(convs, params)
    for a, b in zip(want, got):
        assert b.outputs[0].token_ids == a.outputs[0].token_ids
        assert b.outputs[0].finish_reason == a.outputs[0].finish_reason
    assert got[3].outputs[0].finish_reason == "stop"
    for x, y in zip(want[1].outputs[0].logprobs, got[1].outputs[0].logprobs, strict=True):
        assert list(x) == list(y)  # the same token ids, in the same order
        assert [v.logprob for v in x.values()] == pytest.approx(
            [v.logprob for v in y.values()], abs=1e-3
        )
    after = spec.stats()
    assert after.spec_accepted_tokens - before.spec_accepted_tokens > 50
    assert after.num_steps - before.num_steps < 0.6 * (64 + 48 + 48 + 64)
    assert after.kv_blocks_used == 0


def test_smollm_greedy_identical_with_nothing_to_copy(smollm_pair):
    plain, spec = smollm_pair
    params = SamplingParams(temperature=0.0, max_tokens=32)
    assert spec.chat(FREE, params)[0].outputs[0].token_ids == (
        plain.chat(FREE, params)[0].outputs[0].token_ids
    )


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    tok = tiny.build_tokenizer()
    model = make_hf_model("llama", tok.get_vocab_size())
    return str(tiny.save_hf(model, tok, tmp_path_factory.mktemp("tiny-spec")))


def _tiny_pair(path: str):
    common = {"dtype": "float32", "kv_cache_memory_gib": 0.05, "max_num_seqs": 64}
    return LLM(path, **common), LLM(path, speculative="ngram", **common)


PROMPT = [40, 41, 42, 43, 44] * 5


def test_tiny_greedy_is_identical(tiny_path):
    plain, spec = _tiny_pair(tiny_path)
    params = SamplingParams(temperature=0.0, max_tokens=40, ignore_eos=True)
    prompts = [PROMPT, PROMPT[:13], [7, 8, 9, 7, 8, 9, 7]]
    want = [o.outputs[0].token_ids for o in plain.generate(prompts, params)]
    got = [o.outputs[0].token_ids for o in spec.generate(prompts, params)]
    assert got == want
    assert spec.stats().spec_draft_tokens > 0


def test_tiny_seeded_sampling_is_distributed_as_without(tiny_path):
    """Tokens 2..6 of 600 seeded samples per mode (the first comes from the prefill, so it
    is never speculated): per position, a chi-square test of homogeneity between modes.
    The prompt is the model's own greedy text, yet drafts are accepted only ~5% of the
    time, so this catches gross errors (rows misaligned, drafts always kept) but has little
    power against a subtly wrong residual: tests/unit/engine/test_speculative.py's
    soft-scripted engine test (35% acceptance, 2000 seeds) is the one that catches that."""
    plain, spec = _tiny_pair(tiny_path)
    greedy = SamplingParams(temperature=0.0, max_tokens=48, ignore_eos=True)
    prompt = plain.generate([PROMPT[:7]], greedy)[0].outputs[0].token_ids
    n = 600
    params = [
        SamplingParams(temperature=1.0, top_k=4, max_tokens=6, seed=s, ignore_eos=True)
        for s in range(n)
    ]
    a = [o.outputs[0].token_ids for o in plain.generate([prompt] * n, params)]
    params_b = [p.clone(seed=n + i) for i, p in enumerate(params)]
    b = [o.outputs[0].token_ids for o in spec.generate([prompt] * n, params_b)]
    st = spec.stats()
    assert 0 < st.spec_accepted_tokens < st.spec_draft_tokens  # both branches ran
    for pos in range(1, 6):
        tokens = sorted({t[pos] for t in a + b})
        table = [[sum(t[pos] == v for t in rows) for v in tokens] for rows in (a, b)]
        keep = [j for j in range(len(tokens)) if table[0][j] + table[1][j] >= 10]
        table = [[row[j] for j in keep] for row in table]
        assert len(keep) >= 2
        _, pvalue, _, _ = stats.chi2_contingency(table)
        assert pvalue > 1e-3, (pos, table)
