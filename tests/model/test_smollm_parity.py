"""Golden reference: the packaged SmolLM2 GGUF through our loader and model must give
transformers' logits and greedy tokens (float32)."""

from __future__ import annotations

import pytest
import torch

from tests.model.paged import PagedRunner

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in a few sentences how a bicycle works.",
    "Give me three tips for learning to program.",
]
NEW_TOKENS = 32
# Measured max |ours - HF| over every position of a chat prompt: 7.8e-5, with logits up
# to 37.6 in magnitude (last position: 4.8e-5) -- float32 summation-order noise. 3e-4
# leaves headroom yet catches any real defect (a wrong RoPE row order or a missed bias
# moves logits by whole units).
LOGIT_ATOL = 3e-4


def chat_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.fixture(scope="module")
def prompts_ids(smollm) -> list[list[int]]:
    return [chat_ids(smollm.tokenizer, p) for p in PROMPTS]


@pytest.fixture(scope="module")
def ours_greedy(smollm, prompts_ids) -> list[list[int]]:
    eos = set(smollm.arch.eos_token_ids)
    return PagedRunner(smollm.model).greedy(prompts_ids, NEW_TOKENS, eos)


@pytest.fixture(scope="module")
def hf_greedy(smollm, hf_smollm, prompts_ids) -> list[list[int]]:
    """transformers' greedy generate, batched with left padding (checked to give the
    same tokens as one prompt at a time, at a third of the cost)."""
    pad = smollm.tokenizer.eos_token_id
    width = max(len(p) for p in prompts_ids)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts_ids])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts_ids])
    with torch.inference_mode():
        out = hf_smollm.generate(
            ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=NEW_TOKENS,
            eos_token_id=list(smollm.arch.eos_token_ids),
            pad_token_id=pad,
        )
    refs = []
    for row in out[:, width:].tolist():
        if pad in row:
            row = row[: row.index(pad) + 1]
        refs.append(row)
    return refs


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_greedy_matches_transformers(smollm, ours_greedy, hf_greedy, index):
    ours, ref = ours_greedy[index], hf_greedy[index]
    assert ours == ref, (smollm.tokenizer.decode(ours), smollm.tokenizer.decode(ref))


def test_greedy_runs_are_long(ours_greedy):
    """The parity above is only worth its name if most continuations are full length."""
    assert sum(len(o) == NEW_TOKENS for o in ours_greedy) >= 3


def test_capital_of_france(smollm, ours_greedy):
    text = smollm.tokenizer.decode(ours_greedy[0], skip_special_tokens=False)
    assert text == "The capital of France is Paris.<|im_end|>"


def test_prefill_logits_match_transformers(smollm, hf_smollm, prompts_ids):
    prompt = prompts_ids[1]
    with torch.inference_mode():
        ref = hf_smollm(torch.tensor([prompt])).logits[0].float()  # (T, vocab)
    ours = PagedRunner(smollm.model).step([("s", prompt)], every_row=True)
    diff = (ours - ref).abs().max().item()
    assert diff < LOGIT_ATOL, f"max |diff| {diff:.2e}"
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


def test_batched_decode_matches_single(smollm):
    """Sequences of different lengths decoded in one batch, beside a prefill chunk in the
    same step, give the logits each gets alone."""
    enc = smollm.tokenizer.encode
    a, b, c = enc("The quick brown fox"), enc("Once upon a time, in a land far"), enc("1 2 3")
    alone = PagedRunner(smollm.model, seed=1)
    alone.step([("a", a)])
    alone.step([("b", b)])
    expect = torch.cat([alone.step([], [("a", 42)]), alone.step([], [("b", 7)])])
    expect_c = alone.step([("c", c)])

    batched = PagedRunner(smollm.model, seed=2)
    batched.step([("a", a), ("b", b)])
    got = batched.step([("c", c)], [("a", 42), ("b", 7)])
    torch.testing.assert_close(got[1:], expect, atol=LOGIT_ATOL, rtol=0)
    torch.testing.assert_close(got[:1], expect_c, atol=LOGIT_ATOL, rtol=0)


def test_chunked_prefill_matches_whole(smollm):
    """A prompt prefilled in three chunks (queries attending to cached context) ends in
    the logits of a one-shot prefill."""
    prompt = smollm.tokenizer.encode("Paged attention splits the cache into fixed blocks so")
    whole = PagedRunner(smollm.model).step([("s", prompt)])
    chunked = PagedRunner(smollm.model, seed=3)
    chunked.step([("s", prompt[:3])])
    chunked.step([("s", prompt[3:7])])
    last = chunked.step([("s", prompt[7:])])
    torch.testing.assert_close(last, whole, atol=LOGIT_ATOL, rtol=0)
