"""Prompt-lookup speculation: proposals, verification, rollback, stop rules, auto-off,
and the rejection sampler's distribution."""

from __future__ import annotations

import random

import pytest
import torch
from scipy import stats

from tokenmill.config import SpeculativeConfig
from tokenmill.engine.draft_verifier import choose
from tokenmill.engine.ngram_proposer import SpeculationState, find_continuation
from tokenmill.engine.request import GenerationRequest
from tokenmill.engine.sampler import Sampler, SamplingRow, process_logits
from tokenmill.errors import ConfigError
from tokenmill.sampling_params import SamplingParams

from .factories import ByteTokenizer, make_core, run_core

NGRAM = SpeculativeConfig(mode="ngram", num_tokens=4)
GREEDY = SamplingParams(temperature=0.0, max_tokens=30)


def ids(text: str) -> list[int]:
    return ByteTokenizer().encode(text, add_special_tokens=False)


# -- proposals --------------------------------------------------------------------------


def test_longest_ngram_wins_and_the_latest_occurrence_is_used():
    # "ab" occurs twice before the end; the 2-gram "ab" -> latest is followed by "y".
    assert find_continuation(list("abxabyab"), 3, 3, 1) == ["y", "a", "b"]
    # The 3-gram "zab" occurred once, followed by "q": it beats the 2-gram's later hit.
    assert find_continuation(list("zabqabyzab"), 2, 3, 1) == ["q", "a"]


def test_no_earlier_occurrence_proposes_nothing():
    assert find_continuation(list("abcdefg"), 4, 3, 1) == []
    assert find_continuation(list("a"), 4, 3, 1) == []
    # min_n above the only matching n: nothing.
    assert find_continuation(list("xyzaqa"), 4, 3, 2) == []


def test_proposal_is_cut_at_the_end_of_the_text():
    assert find_continuation(list("abcab"), 5, 2, 1) == ["c", "a", "b"]


def _naive_continuation(tokens, k, max_n, min_n):
    """The definition, written as plainly as possible: for n from max_n down, the latest
    earlier occurrence of the last n tokens, and the k tokens after it."""
    for n in range(max_n, min_n - 1, -1):
        for end in range(len(tokens) - 2, n - 2, -1):
            if len(tokens) > n and tokens[end - n + 1 : end + 1] == tokens[-n:]:
                return tokens[end + 1 : end + 1 + k]
    return []


def test_lookup_agrees_with_the_plain_definition_on_random_texts():
    rng = random.Random(0)
    for _ in range(3000):
        tokens = [rng.randrange(rng.randint(1, 6)) for _ in range(rng.randint(0, 30))]
        k, max_n = rng.randint(1, 5), rng.randint(1, 4)
        min_n = rng.randint(1, max_n)
        want = _naive_continuation(tokens, k, max_n, min_n)
        assert find_continuation(tokens, k, max_n, min_n) == want, (tokens, k, max_n, min_n)


def test_unknown_modes_are_refused_with_a_clear_error():
    with pytest.raises(ConfigError, match="needs a model"):
        SpeculativeConfig(mode="draft:")
    with pytest.raises(ConfigError, match="ngram"):
        SpeculativeConfig(mode="medusa")


# -- the engine -------------------------------------------------------------------------


def _run(text: str, prompt: str, params: SamplingParams, spec, **kw):
    core = make_core(text, speculative=spec, max_model_len=128, **kw)
    core.add_request(GenerationRequest("r", params, prompt=prompt))
    return run_core(core)["r"].outputs[0], core


def test_greedy_output_is_the_same_in_fewer_steps():
    plain, plain_core = _run("abcdefg", "abcdefga", GREEDY, None)
    spec, spec_core = _run("abcdefg", "abcdefga", GREEDY, NGRAM)
    assert spec.token_ids == plain.token_ids and spec.finish_reason == "length"
    st = spec_core.stats()
    assert plain_core.stats().num_steps == 30  # the prefill step samples the first
    assert st.num_steps < 12
    assert st.spec_accepted_tokens == st.spec_draft_tokens > 0
    assert st.generation_tokens == 30 and st.kv_blocks_used == 0


def test_misleading_prompt_gives_rejections_and_the_same_output():
    # The prompt says "a" is followed by "xyz", but the model continues "a" with "b":
    # drafts copied from the prompt are rejected, and the output is still the plain one.
    params = GREEDY.clone(max_tokens=20)
    plain, _ = _run("abcdefgh", "axyzqbxyzqa", params, None)
    spec, core = _run("abcdefgh", "axyzqbxyzqa", params, NGRAM)
    assert spec.token_ids == plain.token_ids
    st = core.stats()
    assert st.spec_accepted_tokens < st.spec_draft_tokens
    assert st.kv_blocks_used == 0


def test_wrong_drafts_roll_back_exactly():
    core = make_core("abcdefgh", speculative=NGRAM, max_model_len=128, block_size=4)
    core.add_request(GenerationRequest("r", GREEDY.clone(max_tokens=20), prompt="xyzwvuab"))
    req = core._children["r"][0]
    core.step()  # prefill; sampled "c"
    assert req.output_token_ids == ids("c")
    # "c" alone never occurred; force the drafts a wrong continuation would give.
    req.spec.draft_token_ids = ids("dxyz")  # "d" right, then wrong
    sched = core.scheduler.schedule()
    assert [s.num_new_tokens for s in sched.scheduled] == [5]
    logits = core.runner.execute(sched)
    core.scheduler.update_after_step(sched)
    core._postprocess(sched, logits)
    # Accepted "d", then the model's "e" at the first rejection.
    assert req.output_token_ids == ids("cde")
    # BOS + 8 prompt tokens + "cde": 12 tokens, 11 computed. The chunk reached
    # position 13 (4 blocks of 4); the rollback gives the fourth block back.
    assert req.num_computed_tokens == req.num_tokens - 1 == 11
    assert len(core.kv.block_ids(req)) == 3
    assert core.stats().kv_blocks_used == 3
    assert core.stats().spec_draft_tokens == 4 and core.stats().spec_accepted_tokens == 1
    assert req.spec.recent[-1] == (4, 1)


@pytest.mark.parametrize(
    "changes, expect, reason",
    [
        ({"max_tokens": 9}, "bcdefgabc", "length"),
        ({"stop": ["fg"]}, "bcde", "stop"),
        ({"stop_token_ids": ids("e")}, "bcd", "stop"),
    ],
)
def test_stop_rules_see_every_accepted_token(changes, expect, reason):
    params = GREEDY.clone(**changes)
    for spec in (None, NGRAM):
        out, core = _run("abcdefg", "abcdefgabcdefga", params, spec)
        assert (out.text, out.finish_reason) == (expect, reason)
        assert core.stats().kv_blocks_used == 0


def test_auto_off_after_a_window_of_poor_acceptance():
    config = SpeculativeConfig(mode="ngram", window=3, min_acceptance=0.5)
    state = SpeculationState()
    state.record(4, 0, config)
    state.record(4, 0, config)
    assert not state.disabled  # the window is not full yet
    state.record(4, 4, config)
    assert state.disabled  # 4 of 12 < 50%
    state = SpeculationState()
    for accepted in (0, 4, 2, 2):  # the window slides: the first 0 drops out
        state.record(4, accepted, config)
    assert not state.disabled and list(state.recent) == [(4, 4), (4, 2), (4, 2)]
    state = SpeculationState()
    for accepted in (2, 2, 2):
        state.record(4, accepted, config)
    assert not state.disabled  # exactly 50% keeps speculating


def test_auto_off_sequence_decodes_plainly():
    # Drafts copied from the misleading prompt fail twice; then the sequence stops
    # proposing, although its own output later repeats (20 tokens of an 8-cycle).
    params = GREEDY.clone(max_tokens=20)
    spec = SpeculativeConfig(mode="ngram", window=2, min_acceptance=0.9)
    out, core = _run("abcdefgh", "axyzqbxyzqa", params, spec)
    st = core.stats()
    assert st.spec_verify_steps == 2 and st.spec_accepted_tokens < 0.9 * st.spec_draft_tokens
    assert st.num_steps == 20 - st.spec_accepted_tokens - 0
    plain, _ = _run("abcdefgh", "axyzqbxyzqa", params, None)
    assert out.token_ids == plain.token_ids
    # With auto-off disabled the later repeats are speculated on.
    _, eager = _run(
        "abcdefgh",
        "axyzqbxyzqa",
        params,
        SpeculativeConfig(mode="ngram", window=2, min_acceptance=0.0),
    )
    assert eager.stats().spec_verify_steps > 2


# -- rejection sampling -----------------------------------------------------------------


def _row(params: SamplingParams, seed: int) -> SamplingRow:
    return SamplingRow(params, [1, 2], [], torch.Generator().manual_seed(seed), [])


LOGITS = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -1.0])
SAMPLED = SamplingParams(temperature=0.8, top_k=5, logit_bias={3: 1.0})


def _counts(tokens: list[int]) -> list[int]:
    return [tokens.count(t) for t in range(LOGITS.shape[0])]


@pytest.mark.parametrize("draft", [0, 2, 5])
def test_verified_token_is_distributed_as_the_plain_sampler(draft):
    """The speculative choice over many seeds against (a) the plain sampler over other
    seeds (chi-square test of homogeneity) and (b) the law the sampler computes
    (temperature, top-k, logit_bias applied). Draft 5 lies outside the top-k: it must
    always be rejected."""
    n = 4000
    spec = _counts([choose(LOGITS.clone(), _row(SAMPLED, s), draft).token_id for s in range(n)])
    sampler = Sampler()
    plain = _counts(
        [
            sampler.sample(LOGITS.unsqueeze(0).clone(), [_row(SAMPLED, n + s)]).token_ids[0]
            for s in range(n)
        ]
    )
    assert spec[5] == plain[5] == 0
    _, p_homogeneous, _, _ = stats.chi2_contingency([spec[:5], plain[:5]])
    assert p_homogeneous > 1e-3, (spec, plain)
    law = process_logits(LOGITS.unsqueeze(0).clone(), [_row(SAMPLED, 0)]).double().softmax(1)[0]
    _, p_law = stats.chisquare(spec[:5], (law[:5] / law[:5].sum() * n).tolist())
    assert p_law > 1e-3, (spec, law)


def test_the_residual_matters():
    """A verifier that resampled from p (not p without the draft) on rejection would give
    the draft p + (1-p)p: this checks the test above can tell the difference."""
    n = 4000
    p = torch.softmax(LOGITS, 0)
    draft = 0
    wrong = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(n):
        if float(torch.rand(1, generator=gen)) < float(p[draft]):
            wrong.append(draft)
        else:
            wrong.append(int(torch.multinomial(p, 1, generator=gen)))
    _, pvalue = stats.chisquare(_counts(wrong), (p.double() / p.double().sum() * n).tolist())
    assert pvalue < 1e-3


def test_greedy_rows_accept_only_the_argmax():
    greedy = SamplingParams(temperature=0.0, logit_bias={1: 1.0})
    assert choose(LOGITS.clone(), _row(greedy, 0), 1).accepted  # 1.5 + 1 beats 2.0
    choice = choose(LOGITS.clone(), _row(greedy, 0), 0)
    assert not choice.accepted and choice.token_id == 1
    assert choose(LOGITS.clone(), _row(greedy, 0), None).token_id == 1


def test_engine_sampling_is_distributed_as_without_speculation():
    """Through the whole engine (chunked verify pass, rows, rollback), 2000 seeded
    samples per mode of a soft scripted model: after t the scripted successor has
    probability 0.6, so drafts are often, not always, accepted (about 35% of draft tokens).
    Chi-square test of homogeneity per output position, and on the pair of positions 1-2.
    """
    n = 2000
    outputs = {}
    for name, spec in (("plain", None), ("spec", NGRAM)):
        core = make_core(
            "abcd",
            speculative=spec,
            soft_margin=1.5,
            max_model_len=64,
            num_blocks=4096,
            max_seqs=64,
            budget=512,
        )
        offset = 0 if spec is None else n
        for s in range(n):
            params = SamplingParams(temperature=1.0, max_tokens=6, seed=offset + s)
            core.add_request(GenerationRequest(f"r{s}", params, prompt="abcdabcdabcda"))
        final = run_core(core, max_steps=10_000)
        outputs[name] = [final[f"r{s}"].outputs[0].token_ids for s in range(n)]
        if spec is not None:
            st = core.stats()
            assert 0.2 < st.spec_acceptance_rate < 0.8  # both branches run often
    a, b = outputs["plain"], outputs["spec"]
    keys = [lambda t, p=p: t[p] for p in range(1, 6)] + [lambda t: (t[1], t[2])]
    for key in keys:
        cells = sorted({key(t) for t in a + b})
        table = [[sum(key(t) == c for t in rows) for c in cells] for rows in (a, b)]
        _, pvalue, _, _ = stats.chi2_contingency(table)
        assert pvalue > 1e-3, table


def test_serve_refuses_a_draft_mode_without_a_model(capsys):
    from tokenmill.cli.main import main

    assert main(["serve", "--speculative", "draft:"], env={}) == 2
    err = capsys.readouterr().err
    assert "needs a model after 'draft:'" in err


def test_a_short_pool_drops_drafts_before_preempting():
    # 3 usable blocks of 4: a 9-token sequence holds 3 blocks; 4 drafts would need a
    # fourth. The drafts go; the sequence decodes plainly and nobody is preempted.
    core = make_core("abcdefgh", speculative=NGRAM, num_blocks=4, max_model_len=12)
    core.add_request(GenerationRequest("r", GREEDY.clone(max_tokens=3), prompt="abcdefga"))
    req = core._children["r"][0]
    core.step()
    req.spec.draft_token_ids = ids("cdef")
    sched = core.scheduler.schedule()
    assert [s.num_new_tokens for s in sched.scheduled] == [1]
    assert req.draft_token_ids == [] and core.scheduler.num_preemptions == 0


def test_beam_search_and_structured_output_do_not_speculate():
    from tokenmill.config import SpeculativeConfig as Config
    from tokenmill.engine.speculator import Speculator
    from tokenmill.sampling_params import BeamSpec, StructuredSpec

    speculator = Speculator(Config(mode="ngram"), max_model_len=64)
    assert speculator.new_state(GREEDY) is not None
    beam = SamplingParams(n=2, temperature=0.0, max_tokens=8, beam=BeamSpec(2))
    assert speculator.new_state(beam) is None
    structured = GREEDY.clone(structured=StructuredSpec(kind="json_object"))
    assert speculator.new_state(structured) is None
    # Through the engine: a beam request's sequences carry no speculation state.
    plain, _ = _run("abcdefg", "abcdefga", beam, None)
    spec, core = _run("abcdefg", "abcdefga", beam, NGRAM)
    assert spec.token_ids == plain.token_ids and core.stats().spec_draft_tokens == 0
