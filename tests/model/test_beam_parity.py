"""Beam search against transformers' `generate(num_beams=k)` on the same float32
weights: the token ids of every returned beam must be equal, for several widths, `n`,
length penalties and each `early_stopping` mode.

The tiny random Llama's EOS row is scaled up so that hypotheses do end at EOS (a random
model otherwise never says it), which exercises the finished-hypothesis heap, the
length penalty and the early-stopping heuristic, not only the max_tokens path.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.model import tiny
from tests.model.reference import import_transformers
from tokenmill.config import CacheConfig, EngineConfig, SchedulerConfig
from tokenmill.engine.core import EngineCore
from tokenmill.engine.request import GenerationRequest
from tokenmill.model.loader import load_model
from tokenmill.sampling_params import BeamSpec, SamplingParams

transformers = import_transformers()
_ids = itertools.count()

TINY_PROMPTS = [
    "the quick brown fox",
    "paged attention keeps keys",
    "def add(a, b):",
    "numbers 12 345 and words",
]
EOS_SCALE = 2.2
"""How much the tiny model's EOS row of the LM head is scaled: chosen so that about half
the beams end at EOS within NEW_TOKENS (asserted in test_tiny_beams_end_both_ways)."""
NEW_TOKENS = 12


def make_core(loaded, block_size: int = 4, num_blocks: int = 512) -> EngineCore:
    config = EngineConfig(
        cache=CacheConfig(block_size=block_size, num_blocks=num_blocks),
        scheduler=SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=512),
    )
    return EngineCore(config, loaded)


def run_beams(core: EngineCore, prompts: list[list[int]], params: SamplingParams):
    """Every prompt as its own beam request, all in one engine run; the token ids of
    each request's outputs in index order."""
    names = []
    for ids in prompts:
        names.append(f"beam-{next(_ids)}")
        core.add_request(GenerationRequest(names[-1], params, prompt_token_ids=ids))
    final = {}
    while core.has_unfinished():
        for out in core.step():
            if out.finished:
                final[out.request_id] = [o.token_ids for o in out.outputs]
    return [final[name] for name in names]


def hf_beams(model, ids, eos, k, n, lp, es, new_tokens) -> list[list[int]]:
    """transformers' beams, with the padding after a finished one cut off."""
    pad = eos[0]
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.int64),
            num_beams=k,
            num_return_sequences=n,
            do_sample=False,
            length_penalty=lp,
            early_stopping=es,
            max_new_tokens=new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
    beams = []
    for row in out[:, len(ids) :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        assert all(t == pad for t in row[cut:])
        beams.append(row[:cut])
    return beams


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    tok = tiny.build_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = transformers.LlamaForCausalLM(config)
    tiny.randomize(model, seed=11)
    with torch.no_grad():
        model.lm_head.weight[2] *= EOS_SCALE
    model.eval()
    path = tiny.save_hf(model, tok, tmp_path_factory.mktemp("beam") / "hf")
    loaded = load_model(str(path), dtype="float32")
    prompts = [tok.encode(p).ids for p in TINY_PROMPTS]
    return model, loaded, prompts


CASES = [
    # (width, n, length_penalty, early_stopping)
    (2, 1, 1.0, False),
    (2, 2, 1.0, True),
    (2, 2, 0.5, "never"),
    (2, 2, 2.0, "never"),
    (2, 2, 2.0, False),
    (4, 1, 1.0, False),
    (4, 4, 1.0, False),
    (4, 2, 2.0, True),
    (4, 3, -0.5, "never"),
    (4, 4, 0.0, False),
    (4, 4, 1.0, "never"),
    (4, 4, 1.0, True),
    (4, 4, 2.0, False),
]


@pytest.mark.parametrize(("k", "n", "lp", "es"), CASES)
def test_tiny_beams_equal_transformers(tiny_pair, k, n, lp, es):
    model, loaded, prompts = tiny_pair
    core = make_core(loaded)
    eos = sorted(core.eos_token_ids)
    params = SamplingParams(n=n, temperature=0.0, max_tokens=NEW_TOKENS, beam=BeamSpec(k, lp, es))
    ours = run_beams(core, prompts, params)
    for ids, got in zip(prompts, ours, strict=True):
        assert got == hf_beams(model, ids, eos, k, n, lp, es, NEW_TOKENS)
    assert core.kv.pool.num_used == 0, "every beam's blocks are freed at the end"


def test_tiny_beams_end_both_ways(tiny_pair):
    """The parity cases mean something: some returned beams end at EOS before
    max_tokens, others run to max_tokens."""
    _, loaded, prompts = tiny_pair
    core = make_core(loaded)
    params = SamplingParams(n=4, temperature=0.0, max_tokens=NEW_TOKENS, beam=BeamSpec(4))
    beams = [b for req in run_beams(core, prompts, params) for b in req]
    at_eos = sum(1 for b in beams if b[-1] in core.eos_token_ids and len(b) < NEW_TOKENS)
    print(f"{at_eos} of {len(beams)} beams end at EOS before max_tokens")
    assert 0.2 * len(beams) <= at_eos <= 0.8 * len(beams)


@pytest.mark.parametrize(("k", "lp", "a", "b"), [(2, 2.0, False, "never"), (4, 2.0, False, True)])
def test_cases_tell_early_stopping_modes_apart(tiny_pair, k, lp, a, b):
    """In transformers the modes give different beams on some of these prompts, so the
    parity cases above would catch a mode implemented as another."""
    model, loaded, prompts = tiny_pair
    eos = sorted(make_core(loaded).eos_token_ids)
    differ = [
        hf_beams(model, p, eos, k, k, lp, a, NEW_TOKENS)
        != hf_beams(model, p, eos, k, k, lp, b, NEW_TOKENS)
        for p in prompts
    ]
    assert any(differ)


SMOLLM_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rust.",
    "List three prime numbers.",
]
SMOLLM_NEW_TOKENS = 16


@pytest.mark.slow
@pytest.mark.parametrize(("k", "n", "es"), [(2, 2, False), (4, 2, True), (4, 4, "never")])
def test_smollm_beams_equal_transformers(smollm, hf_smollm, k, n, es):
    """The packaged SmolLM2 in float32 (dequantized), chat-formatted prompts."""
    tok = smollm.tokenizer
    prompts = [
        tok.encode(
            tok.apply_chat_template([{"role": "user", "content": p}]), add_special_tokens=False
        )
        for p in SMOLLM_PROMPTS
    ]
    core = make_core(smollm, block_size=16, num_blocks=520)  # 8192 tokens: 512 blocks
    eos = sorted(core.eos_token_ids)
    params = SamplingParams(
        n=n, temperature=0.0, max_tokens=SMOLLM_NEW_TOKENS, beam=BeamSpec(k, 1.0, es)
    )
    ours = run_beams(core, prompts, params)
    for ids, got in zip(prompts, ours, strict=True):
        assert got == hf_beams(hf_smollm, ids, eos, k, n, 1.0, es, SMOLLM_NEW_TOKENS)


@pytest.mark.parametrize("k", [2, 4])
def test_tiny_beams_share_the_prefilled_prompt(tiny_pair, k):
    """On the real model and cache: after the prefill step of a width-k request, the
    prompt was computed once and the pool holds its blocks plus at most k partly
    filled ones (forks copy only the last, partial block), not k copies of it."""
    _, loaded, prompts = tiny_pair
    ids = prompts[0] * 3  # 3 x 4 tokens or more: several full 4-token blocks
    core = make_core(loaded)
    params = SamplingParams(n=1, temperature=0.0, max_tokens=NEW_TOKENS, beam=BeamSpec(k))
    core.add_request(GenerationRequest("share", params, prompt_token_ids=ids))
    core.step()
    prompt_blocks = -(-len(ids) // 4)
    assert core.stats().prompt_tokens_computed == len(ids)
    assert len(core.beams.searches["share"].live) == k
    assert prompt_blocks < core.kv.pool.num_used <= prompt_blocks + k
    assert core.kv.pool.num_used < k * prompt_blocks
