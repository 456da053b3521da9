"""Sampler and logits processors on hand-made logits, with exact expectations."""

from __future__ import annotations

import math

import pytest
import torch

from tokenmill.engine.logits_processors import (
    apply_banned,
    apply_logit_bias,
    apply_min_p,
    apply_penalties,
    apply_temperature,
    apply_top_k,
    apply_top_k_top_p,
)
from tokenmill.engine.sampler import (
    Sampler,
    SamplingRow,
    process_logits,
    prompt_logprobs,
    random_sample,
)
from tokenmill.sampling_params import SamplingParams

NEG_INF = float("-inf")


def make_row(
    prompt: list[int] | None = None,
    output: list[int] | None = None,
    seed: int | None = None,
    banned: list[int] | None = None,
    **params,
) -> SamplingRow:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return SamplingRow(
        params=SamplingParams(seed=seed, **params),
        prompt_token_ids=prompt or [],
        output_token_ids=output or [],
        generator=generator,
        banned_token_ids=banned or [],
    )


def kept(row: torch.Tensor) -> set[int]:
    return set(torch.nonzero(row > NEG_INF).flatten().tolist())


def log_probs(*probs: float) -> torch.Tensor:
    return torch.tensor([probs]).log()


# --- processors ---------------------------------------------------------------------------


def test_logit_bias_adds_exactly_to_named_entries():
    logits = torch.zeros(2, 5)
    rows, tokens = torch.tensor([0, 0, 1]), torch.tensor([1, 4, 1])
    apply_logit_bias(logits, rows, tokens, torch.tensor([2.5, -1.0, 7.0]))
    expected = torch.zeros(2, 5)
    expected[0, 1], expected[0, 4], expected[1, 1] = 2.5, -1.0, 7.0
    assert torch.equal(logits, expected)


def test_banned_ids_become_minus_inf_and_nothing_else_changes():
    logits = torch.arange(10.0).reshape(2, 5)
    apply_banned(logits, torch.tensor([0, 1, 1]), torch.tensor([4, 0, 2]))
    expected = torch.arange(10.0).reshape(2, 5)
    expected[0, 4] = expected[1, 0] = expected[1, 2] = NEG_INF
    assert torch.equal(logits, expected)


def test_repetition_penalty_divides_positive_multiplies_negative_over_prompt_and_output():
    logits = torch.tensor([[2.0, -2.0, 4.0, -4.0, 1.0]])
    zero = torch.zeros(1)
    apply_penalties(logits, [[0, 1, 0]], [[2, 2]], torch.tensor([2.0]), zero, zero)
    assert logits.tolist() == [[1.0, -4.0, 2.0, -4.0, 1.0]]


def test_presence_and_frequency_penalties_use_output_counts_only():
    logits = torch.zeros(1, 4)
    apply_penalties(
        logits, [[3, 3]], [[0, 1, 1, 1]], torch.ones(1), torch.tensor([0.5]), torch.tensor([0.25])
    )
    assert logits.tolist() == [[-0.75, -1.25, 0.0, 0.0]]


def test_penalties_apply_per_row_and_skip_rows_without_tokens():
    logits = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [-2.0, 2.0, 2.0]])
    apply_penalties(
        logits,
        [[0], [], [0, 0]],
        [[1, 1], [], [0]],
        torch.tensor([2.0, 1.0, 4.0]),
        torch.tensor([0.0, 0.0, 1.0]),
        torch.tensor([1.0, 0.0, 0.0]),
    )
    assert logits.tolist() == [[1.0, -1.0, 2.0], [2.0, 2.0, 2.0], [-9.0, 2.0, 2.0]]


def test_temperature_scales_the_distribution_as_softmax_of_logits_over_t():
    logits = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    apply_temperature(logits, torch.tensor([0.5, 2.0]))
    assert torch.equal(logits, torch.tensor([[2.0, 4.0, 6.0], [0.5, 1.0, 1.5]]))
    probs = logits.softmax(dim=1)
    plain = torch.tensor([1.0, 2.0, 3.0]).softmax(dim=0)
    assert probs[0, 2] > plain[2] > probs[1, 2]


@pytest.mark.parametrize("k", [1, 2, 3, 5, 100])
def test_top_k_keeps_exactly_k_largest(k):
    logits = torch.tensor([[0.3, 5.0, -1.0, 2.0, 4.0]])
    apply_top_k(logits, torch.tensor([k]))
    assert kept(logits[0]) == set([1, 4, 3, 0, 2][:k])
    assert logits[0, 1] == 5.0


def test_top_k_with_ties_still_keeps_exactly_k():
    logits = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    apply_top_k(logits, torch.tensor([2]))
    assert len(kept(logits[0])) == 2


def test_top_p_keeps_the_minimal_nucleus():
    # Sorted probabilities 0.5, 0.25, 0.15, 0.1 (tokens 1, 3, 0, 2); cumulative .5 .75 .9 1.
    logits = log_probs(0.15, 0.5, 0.1, 0.25).repeat(4, 1)
    apply_top_k_top_p(logits, None, torch.tensor([0.7, 0.45, 0.8, 1.0]))
    assert kept(logits[0]) == {1, 3}
    assert kept(logits[1]) == {1}
    assert kept(logits[2]) == {1, 3, 0}
    assert kept(logits[3]) == {0, 1, 2, 3}
    assert torch.equal(logits[3], log_probs(0.15, 0.5, 0.1, 0.25)[0])


def test_top_p_keeps_at_least_one_token():
    logits = log_probs(0.9, 0.1)
    apply_top_k_top_p(logits, None, torch.tensor([0.01]))
    assert kept(logits[0]) == {0}


def test_top_k_then_top_p_renormalises_over_the_top_k():
    # After top-2 the mass is 2/3, 1/3: p=0.7 keeps both (without top-k it would keep 3).
    logits = log_probs(0.15, 0.5, 0.1, 0.25)
    apply_top_k_top_p(logits, torch.tensor([2]), torch.tensor([0.7]))
    assert kept(logits[0]) == {1, 3}


def test_min_p_drops_tokens_below_fraction_of_top():
    logits = log_probs(0.5, 0.26, 0.24)
    apply_min_p(logits, torch.tensor([0.5]))
    assert kept(logits[0]) == {0, 1}


# --- sampler ------------------------------------------------------------------------------


def test_greedy_takes_argmax_and_leaves_logits_untouched_by_sampling_stages():
    logits = torch.tensor([[0.1, 3.0, 2.0], [5.0, -1.0, 4.9]])
    out = Sampler().sample(logits.clone(), [make_row(temperature=0.0, top_k=1, top_p=0.1)] * 2)
    assert out.token_ids == [1, 0]
    assert out.logprobs == [None, None]


def test_greedy_applies_bias_bans_and_penalties():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    rows = [
        make_row(temperature=0.0, logit_bias={3: 3.5}),
        make_row(temperature=0.0, banned=[0]),
        make_row(temperature=0.0, output=[0, 0], frequency_penalty=1.5),
        make_row(temperature=0.0, prompt=[0], repetition_penalty=2.0),
    ]
    out = Sampler().sample(logits.repeat(4, 1), rows)
    assert out.token_ids == [3, 1, 1, 1]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_unused_stages_are_skipped(monkeypatch, temperature):
    import tokenmill.engine.sampler as sampler_module

    def forbidden(*args, **kwargs):
        raise AssertionError("stage ran although no row uses it")

    for name in ("apply_temperature", "apply_top_k_top_p", "apply_min_p", "apply_penalties"):
        monkeypatch.setattr(sampler_module, name, forbidden)
    monkeypatch.setattr(sampler_module, "apply_logit_bias", forbidden)
    monkeypatch.setattr(sampler_module, "apply_banned", forbidden)
    logits = torch.randn(64, 49152)
    expected = logits.argmax(dim=1).tolist()
    out = Sampler().sample(logits, [make_row(temperature=temperature)] * 64)
    assert len(out.token_ids) == 64
    if temperature == 0.0:
        assert out.token_ids == expected


def test_process_logits_applies_stages_in_order():
    # bias (+1 on token 0) then repetition (divide by 2) then temperature 0.5: (3+1)/2/0.5 = 4.
    logits = torch.tensor([[3.0, 1.0, -1.0]])
    row = make_row(prompt=[0, 2], temperature=0.5, logit_bias={0: 1.0}, repetition_penalty=2.0)
    process_logits(logits, [row])
    assert logits.tolist() == [[4.0, 2.0, -4.0]]


def test_sampling_follows_the_distribution_and_temperature():
    torch.manual_seed(0)
    probs = torch.tensor([0.1, 0.2, 0.7])
    draws = random_sample(probs.log().softmax(0).repeat(20000, 1), [None] * 20000)
    freq = torch.bincount(draws, minlength=3).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    rows = [make_row(temperature=0.25)] * 4000
    hot = Sampler().sample(probs.log().repeat(4000, 1), rows)
    sharp = torch.tensor([0.1, 0.2, 0.7]) ** 4
    expected = sharp / sharp.sum()
    freq = torch.bincount(torch.tensor(hot.token_ids), minlength=3).float() / 4000
    assert torch.allclose(freq, expected, atol=0.02)


def test_sampling_never_picks_a_filtered_token():
    logits = log_probs(0.3, 0.3, 0.2, 0.2).repeat(500, 1)
    rows = [make_row(top_k=2)] * 250 + [make_row(top_p=0.4, banned=[0])] * 250
    out = Sampler().sample(logits, rows)
    assert set(out.token_ids[:250]) == {0, 1}
    assert set(out.token_ids[250:]) == {1}


def mixed_batch_logits(vocab: int = 64) -> torch.Tensor:
    return torch.randn(16, vocab, generator=torch.Generator().manual_seed(7))


def test_seeded_row_is_independent_of_batch_composition_and_position():
    logits = mixed_batch_logits()
    target = {"seed": 1234, "temperature": 0.9, "top_p": 0.95}
    alone = Sampler().sample(logits[5:6].clone(), [make_row(**target)]).token_ids[0]
    rows = []
    for i in range(16):
        if i == 5:
            rows.append(make_row(**target))
        elif i % 3 == 0:
            rows.append(make_row(temperature=0.0))
        elif i % 3 == 1:
            rows.append(make_row(seed=i, top_k=5))
        else:
            rows.append(make_row(temperature=1.3, min_p=0.05))
    in_batch = Sampler().sample(logits.clone(), rows).token_ids[5]
    assert in_batch == alone


def test_seeded_sequences_repeat_and_different_seeds_differ():
    logits = torch.zeros(1, 1000)

    def draw(seed: int) -> list[int]:
        row = make_row(seed=seed)
        return [Sampler().sample(logits.clone(), [row]).token_ids[0] for _ in range(5)]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)
    assert len(set(draw(1))) > 1


def test_logprobs_are_raw_log_softmax_with_ranks():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    raw = logits.log_softmax(dim=1)[0]
    row = make_row(temperature=0.0, logprobs=2, logit_bias={3: 10.0})
    out = Sampler().sample(logits.clone(), [row])
    assert out.token_ids == [3]
    entry = out.logprobs[0]
    assert entry.token_ids == [3, 1, 2]
    assert entry.ranks == [4, 1, 2]
    assert entry.logprobs == [raw[3].item(), raw[1].item(), raw[2].item()]


def test_logprobs_zero_gives_only_the_chosen_token_and_none_elsewhere():
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    rows = [make_row(temperature=0.0, logprobs=0), make_row(temperature=0.0)]
    out = Sampler().sample(logits.clone(), rows)
    assert out.logprobs[1] is None
    assert out.logprobs[0].token_ids == [1]
    assert out.logprobs[0].ranks == [1]
    assert out.logprobs[0].logprobs[0] == pytest.approx(-math.log1p(math.exp(-2.0)))


def test_prompt_logprobs_values_and_shape():
    logits = torch.randn(300, 11, generator=torch.Generator().manual_seed(3))
    targets = torch.randint(0, 11, (300,), generator=torch.Generator().manual_seed(4))
    out = prompt_logprobs(logits, targets, top_n=3)
    raw = logits.log_softmax(dim=1)
    assert len(out) == 300
    for p in (0, 255, 256, 299):
        entry = out[p]
        top = raw[p].topk(3)
        assert entry.token_ids == [targets[p].item(), *top.indices.tolist()]
        assert entry.logprobs == [raw[p, targets[p]].item(), *top.values.tolist()]
        assert entry.ranks[0] == int((raw[p] > raw[p, targets[p]]).sum()) + 1
        assert entry.ranks[1:] == [1, 2, 3]


class _OnlyTokens:
    """A grammar state that allows exactly `allowed` next (fills its bitmask row)."""

    def __init__(self, *allowed: int):
        self.allowed = allowed

    def fill_bitmask(self, bitmask: torch.Tensor, row: int) -> None:
        bitmask[row] = 0
        for token in self.allowed:
            word, bit = divmod(token, 32)
            value = int(bitmask[row, word]) | (1 << bit)
            bitmask[row, word] = value - (1 << 32) if value >= 1 << 31 else value


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_grammar_wins_over_bans_that_remove_all_it_allows(temperature):
    """A finished grammar allows only EOS; min_tokens bans EOS. The row must still pick a
    token the grammar allows (a token outside it used to stop the engine)."""
    eos = 40
    row = make_row(banned=[eos], seed=3, temperature=temperature, min_tokens=5)
    row.constraint = _OnlyTokens(eos)
    free = make_row(seed=4, temperature=temperature)
    logits = torch.randn(2, 64, generator=torch.Generator().manual_seed(0))
    out = Sampler().sample(logits, [row, free])
    assert out.token_ids[0] == eos
    assert 0 <= out.token_ids[1] < 64


def test_a_tiny_repetition_penalty_leaves_a_distribution_to_sample():
    """logit / 5e-324 overflows to +inf; the row must not turn into NaN probabilities."""
    logits = torch.tensor([[2.0, 1.0, -1.0, 0.5]])
    row = make_row(prompt=[0, 1], seed=1, temperature=1.0, repetition_penalty=5e-324)
    process_logits(logits, [row])
    assert not torch.isnan(logits).any() and not torch.isposinf(logits).any()
    probs = logits.softmax(dim=1)
    assert torch.allclose(probs.sum(), torch.tensor(1.0))
    # Both boosted tokens (the prompt's, positive logits) share the probability.
    assert probs[0, 0] == pytest.approx(0.5) and probs[0, 1] == pytest.approx(0.5)
    row = make_row(prompt=[0, 1], seed=1, temperature=1.0, repetition_penalty=5e-324)
    assert Sampler().sample(torch.tensor([[2.0, 1.0, -1.0, 0.5]]), [row]).token_ids[0] in (0, 1)


def test_a_masked_token_seen_before_stays_masked_under_a_vanishing_penalty():
    """repetition_penalty 5e-324 is 0 in float32, and -inf x 0 is NaN: argmax then took
    the grammar-masked token (schemathesis found it: "token 32 is outside the request's
    grammar" stopped the engine)."""
    eos = 7
    row = make_row(prompt=[3], output=[3], temperature=0.0, repetition_penalty=5e-324)
    row.constraint = _OnlyTokens(eos)
    logits = torch.randn(1, 16, generator=torch.Generator().manual_seed(2))
    assert Sampler().sample(logits, [row]).token_ids == [eos]
