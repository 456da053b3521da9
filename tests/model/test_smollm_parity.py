"""Golden reference: the packaged SmolLM2 GGUF through our loader and the engine's own
ModelRunner must give transformers' float32 logits and greedy tokens, in every
precision the engine offers, within the tolerance each needs (tests/model/precisions.py).

Logits are compared on every path a step can take: a whole prompt in one step, a prompt
split across steps (queries attending to cached K/V), and one-token decodes batched
with other sequences and a prefill chunk.
"""

from __future__ import annotations

import pytest
import torch

from tests.model.driver import RunnerDriver
from tests.model.precisions import BLOCKS, PRECISIONS, Precision
from tokenmill.config import CacheConfig, EngineConfig, ModelConfig
from tokenmill.engine.core import EngineCore

pytestmark = pytest.mark.slow

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain in a few sentences how a bicycle works.",
    "Give me three tips for learning to program.",
    "Write a haiku about rust.",
    "List three prime numbers.",
    "Translate 'good morning' to Spanish.",
    "Why is the sky blue?",
]
NEW_TOKENS = 32
PREFILLED = 1
"""The prompt whose logits the prefill tests compare (38 tokens: three 16-token blocks)."""
LATE = "Paged attention splits the cache into fixed blocks, so memory is never wasted."
"""A prompt prefilled in chunks of 7 beside the decodes of the teacher-forced test."""


def chat_ids(tokenizer, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}])
    return tokenizer.encode(text, add_special_tokens=False)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@pytest.fixture(scope="module")
def prompts_ids(smollm) -> list[list[int]]:
    return [chat_ids(smollm.tokenizer, p) for p in PROMPTS]


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


@pytest.fixture(scope="module")
def hf_logits(hf_smollm, prompts_ids, hf_greedy) -> list[torch.Tensor]:
    """transformers' float32 logits over each prompt and its greedy continuation, one
    forward pass each without a KV cache: (len(prompt) + len(continuation), vocab)."""
    with torch.inference_mode():
        return [
            hf_smollm(torch.tensor([p + g])).logits[0].float()
            for p, g in zip(prompts_ids, hf_greedy, strict=True)
        ]


@pytest.fixture(scope="module", params=PRECISIONS, ids=lambda p: p.name)
def precision(request) -> Precision:
    return request.param


def require_blocks(loaded) -> None:
    if not loaded.kernel_path.startswith(BLOCKS):
        pytest.skip(f"no native kernels here: the default path is {loaded.kernel_path}")


@pytest.fixture(scope="module")
def loaded(precision):
    model = precision.load_model()
    if precision.name == BLOCKS:
        require_blocks(model)
    return model


@pytest.fixture(scope="module")
def ours_greedy(precision, loaded, prompts_ids) -> list[list[int]]:
    """Free-running greedy: all prompts prefilled in one step, then decoded as a batch."""
    eos = set(loaded.arch.eos_token_ids)
    driver = RunnerDriver(loaded, precision.kv_dtype, num_blocks=48)
    return driver.greedy(prompts_ids, NEW_TOKENS, eos)


def assert_close_to_reference(precision: Precision, ours: torch.Tensor, ref: torch.Tensor):
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    top1 = (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"{precision.name}: max |diff| {diff:.3g}, argmax agrees on {top1:.4f} of {len(ref)}")
    assert diff < precision.logit_atol, f"max |ours - transformers| {diff:.3g}"
    assert top1 >= precision.min_top1, f"argmax agrees on {top1:.3f} of {len(ref)} rows"


def test_prefill_logits_match_transformers(precision, loaded, prompts_ids, hf_logits):
    prompt = prompts_ids[PREFILLED]
    driver = RunnerDriver(loaded, precision.kv_dtype)
    driver.add("s", prompt)
    ours = driver.step({"s": len(prompt)})["s"]
    assert_close_to_reference(precision, ours, hf_logits[PREFILLED][: len(prompt)])


def test_chunked_prefill_logits_match_transformers(precision, loaded, prompts_ids, hf_logits):
    """Chunks of 3, 11 and the rest: the second crosses a 16-token block boundary, and
    each later chunk's queries read the earlier chunks' K/V from the cache."""
    prompt = prompts_ids[PREFILLED]
    n = len(prompt)
    driver = RunnerDriver(loaded, precision.kv_dtype, seed=1)
    driver.add("s", prompt)
    rows = [driver.step({"s": k})["s"] for k in (3, 11, n - 14)]
    assert [len(r) for r in rows] == [3, 11, n - 14]
    assert_close_to_reference(precision, torch.cat(rows), hf_logits[PREFILLED][:n])


def test_decode_logits_and_greedy_choices_match_transformers(
    precision, loaded, smollm, prompts_ids, hf_greedy, hf_logits
):
    """Teacher forcing: every prompt prefilled in one step, then transformers' greedy
    continuations fed back one token per step, all prompts decoding as one batch while
    another prompt is prefilled in chunks of 7 in the same steps. Each row predicting a
    continuation token is compared, so one early difference cannot compound; its argmax
    agreement is the rate of greedy choices the precision keeps."""
    late = smollm.tokenizer.encode(LATE)
    driver = RunnerDriver(loaded, precision.kv_dtype, num_blocks=48, seed=2)
    names = [f"p{i}" for i in range(len(prompts_ids))]
    for name, prompt in zip(names, prompts_ids):
        driver.add(name, prompt, every_row=False)
    driver.add("late", late, every_row=False)
    rows = {
        name: [logits]
        for name, logits in driver.step(
            {name: len(p) for name, p in zip(names, prompts_ids)}
        ).items()
    }
    late_done = 0
    for k in range(NEW_TOKENS - 1):
        work = {}
        for name, cont in zip(names, hf_greedy):
            if k + 1 < len(cont):  # the row for cont[k + 1] decodes cont[k]
                driver.append(name, cont[k])
                work[name] = 1
        if late_done < len(late):
            work["late"] = min(7, len(late) - late_done)
            late_done += work["late"]
        for name, logits in driver.step(work).items():
            if name != "late":  # its prompt completes: one row nobody compares
                rows[name].append(logits)
    assert late_done == len(late)
    ours, ref = [], []
    for name, prompt, cont, logits in zip(names, prompts_ids, hf_greedy, hf_logits):
        ours.append(torch.cat(rows[name]))
        ref.append(logits[len(prompt) - 1 : len(prompt) - 1 + len(cont)])
    assert [len(o) for o in ours] == [len(c) for c in hf_greedy]
    assert_close_to_reference(precision, torch.cat(ours), torch.cat(ref))


def test_greedy_matches_transformers(precision, smollm, ours_greedy, hf_greedy):
    """Free running, a precision's first different choice sends the rest of the
    continuation elsewhere: the agreement is the tokens before it, over all prompts."""
    decode = smollm.tokenizer.decode
    agreed = [common_prefix(o, r) for o, r in zip(ours_greedy, hf_greedy, strict=True)]
    rate = sum(agreed) / sum(len(r) for r in hf_greedy)
    print(f"{precision.name}: greedy agreement {rate:.4f}, tokens before a difference {agreed}")
    differing = [
        (decode(o), decode(r)) for o, r, k in zip(ours_greedy, hf_greedy, agreed) if k < len(r)
    ]
    assert rate >= precision.min_greedy, (f"greedy agreement {rate:.3f}", agreed, differing)


def test_kv_dtype_is_the_one_the_engine_picks(precision, loaded):
    """The table pairs each precision with the K/V dtype the engine chooses for it when
    the cache dtype is "auto"; if the engine's choice changes, the table must follow."""
    config = EngineConfig(
        ModelConfig(**precision.load), CacheConfig(), num_threads=torch.get_num_threads()
    )
    assert EngineCore(config, loaded).runner.dtype is precision.kv_dtype


def test_greedy_runs_are_long(hf_greedy):
    """The parity above is only worth its name if most continuations are full length."""
    assert sum(len(r) == NEW_TOKENS for r in hf_greedy) >= 6


def test_capital_of_france(precision, smollm, loaded, prompts_ids, ours_greedy):
    """Word for word in the exact precisions. A lossy one may open otherwise: the first
    token is a near tie even in float32 ("The" over "L", 0.08 nats apart), and int8's
    per-row activation rounding turns float32-level differences (the native norm's or
    prefill attention's summation order; 1e-6 relative noise on ATen's attention output
    moved int8's "The" by up to 0.5 nats) into either choice. So a lossy precision must
    still know the answer: given the sentence's start, its next token is " Paris"."""
    tok = smollm.tokenizer
    if precision.min_greedy == 1.0:
        text = tok.decode(ours_greedy[0], skip_special_tokens=False)
        assert text == "The capital of France is Paris.<|im_end|>"
        return
    ids = prompts_ids[0] + tok.encode("The capital of France is", add_special_tokens=False)
    driver = RunnerDriver(loaded, precision.kv_dtype)
    driver.add("s", ids)
    logits = driver.step({"s": len(ids)})["s"]
    assert tok.decode([int(logits[-1].argmax())]) == " Paris"


# Float32 only (dequantized, or the GGUF's blocks with float32 accumulation): the engine
# promises that in float32 a request's tokens do not depend on how its prompt was split
# or what shares its batch. Lower precisions round differently at other matrix shapes;
# their tolerances above cover it.
FLOAT32 = PRECISIONS[0]


@pytest.fixture(scope="module", params=["float32", BLOCKS])
def exact(request, smollm):
    """The packaged model in float32: dequantized weights, or its own blocks."""
    if request.param == "float32":
        return smollm
    model = next(p for p in PRECISIONS if p.name == BLOCKS).load_model()
    require_blocks(model)
    return model


def test_chunked_greedy_matches_whole_in_float32(exact, prompts_ids, hf_greedy):
    """The prompts prefilled 5 tokens a step beside the others' decodes reach the same
    tokens as one-step prefills (which equal transformers')."""
    smollm = exact
    eos = set(smollm.arch.eos_token_ids)
    driver = RunnerDriver(smollm, FLOAT32.kv_dtype, num_blocks=48, seed=5)
    assert driver.greedy(prompts_ids, NEW_TOKENS, eos, chunk=5) == hf_greedy


def test_batched_decode_matches_single_in_float32(exact):
    """Sequences of different lengths decoded in one batch, beside a prefill chunk in the
    same step, give the logits each gets alone."""
    smollm = exact
    assert FLOAT32.name == "float32" and smollm.dtype is torch.float32
    enc = smollm.tokenizer.encode
    prompts = {
        "a": enc("The quick brown fox"),
        "b": enc("Once upon a time, in a land far"),
        "c": enc("1 2 3"),
    }
    alone = RunnerDriver(smollm, FLOAT32.kv_dtype, seed=1)
    batched = RunnerDriver(smollm, FLOAT32.kv_dtype, seed=2)
    for driver in (alone, batched):
        for name, prompt in prompts.items():
            driver.add(name, prompt, every_row=False)
    alone.step({"a": len(prompts["a"])})
    alone.step({"b": len(prompts["b"])})
    batched.step({"a": len(prompts["a"]), "b": len(prompts["b"])})
    for driver in (alone, batched):
        driver.append("a", 42)
        driver.append("b", 7)
    n_c = len(prompts["c"])
    expect = [alone.step({"a": 1})["a"], alone.step({"b": 1})["b"], alone.step({"c": n_c})["c"]]
    got = batched.step({"c": n_c, "a": 1, "b": 1})
    for name, want in zip("abc", expect):
        torch.testing.assert_close(got[name], want, atol=FLOAT32.logit_atol, rtol=0)
