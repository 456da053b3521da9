"""Beam search in the engine core: beams share the prompt's KV blocks by reference,
copy only a partly filled last block, and free everything at the end."""

from __future__ import annotations

import pytest
import torch

from tests.unit.engine.factories import ByteTokenizer, make_core, run_core
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import InvalidRequestError
from tokenmill.sampling_params import BeamSpec, SamplingParams


def beam_params(width: int, n: int = 1, max_tokens: int = 6) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.0, max_tokens=max_tokens, beam=BeamSpec(width))


def prompt(length: int) -> list[int]:
    return [ByteTokenizer.OFFSET + ord("a") + i % 4 for i in range(length)]


@pytest.mark.parametrize("width", [2, 4])
def test_prefill_once_then_beams_share_full_blocks(width):
    """A 10-token prompt in 4-token blocks: 2 full blocks and a partial one. After the
    prefill step the `width` beams hold the 2 full blocks by reference and one partial
    block each: 3 + (width - 1) blocks, not width x 3."""
    core = make_core(block_size=4)
    core.add_request(GenerationRequest("b", beam_params(width), prompt_token_ids=prompt(10)))
    core.step()
    assert core.stats().prompt_tokens_computed == 10, "the prompt is prefilled once"
    beams = core.beams.searches["b"].live
    assert len(beams) == width
    tables = [core.kv.block_ids(b) for b in beams]
    full = tables[0][:2]
    assert all(t[:2] == full for t in tables)
    assert all(core.kv.pool.blocks[i].ref_cnt == width for i in full)
    partials = {t[2] for t in tables}
    assert len(partials) == width, "each beam writes its next token into its own block"
    assert core.kv.pool.num_used == 3 + (width - 1)
    assert all(b.num_computed_tokens == 10 and len(b.output_token_ids) == 1 for b in beams)


def test_block_aligned_prompt_forks_without_copies():
    """An 8-token prompt fills its 2 blocks: the forks copy nothing."""
    core = make_core(block_size=4)
    core.add_request(GenerationRequest("b", beam_params(4), prompt_token_ids=prompt(8)))
    core.step()
    assert core.kv.pool.num_used == 2
    assert {tuple(core.kv.block_ids(b)) for b in core.beams.searches["b"].live} == {
        tuple(core.kv.block_ids(core.beams.searches["b"].live[0]))
    }


def test_copy_blocks_copies_every_layer():
    core = make_core(block_size=4)
    runner = core.runner
    for kv in runner.kv_caches:
        kv[:, 8:12] = torch.randn(2, 4, *kv.shape[2:])
    runner.copy_blocks([(2, 5)])
    for kv in runner.kv_caches:
        assert torch.equal(kv[:, 20:24], kv[:, 8:12])


def test_beam_request_returns_n_beams_and_frees_every_block():
    core = make_core(block_size=4)
    core.add_request(GenerationRequest("b", beam_params(4, n=3), prompt_token_ids=prompt(10)))
    final = run_core(core)["b"]
    assert [o.index for o in final.outputs] == [0, 1, 2]
    assert all(o.finish_reason in ("stop", "length") for o in final.outputs)
    assert len({tuple(o.token_ids) for o in final.outputs}) == 3, "beams are distinct"
    assert core.kv.pool.num_used == 0
    assert not core.beams.searches and not core.scheduler.running


def test_abort_frees_live_beams():
    core = make_core(block_size=4)
    core.add_request(
        GenerationRequest("b", beam_params(4, max_tokens=20), prompt_token_ids=prompt(10))
    )
    core.step()
    core.step()
    assert core.kv.pool.num_used > 0
    out = core.abort("b")
    assert out and out[0].finished
    assert all(o.finish_reason == "abort" for o in out[0].outputs)
    assert core.kv.pool.num_used == 0 and not core.has_unfinished()


def test_preempted_beams_recompute_to_the_same_result():
    """A pool too small for every beam at once: beams are preempted, recompute from the
    prefix cache, and the search returns what it returns with room to spare."""
    results = {}
    for num_blocks in (8, 64):
        core = make_core(block_size=4, num_blocks=num_blocks, max_model_len=24)
        params = beam_params(4, n=4, max_tokens=12)
        core.add_request(GenerationRequest("b", params, prompt_token_ids=prompt(10)))
        final = run_core(core)["b"]
        results[num_blocks] = [o.token_ids for o in final.outputs]
        assert core.kv.pool.num_used == 0
        assert (core.scheduler.num_preemptions > 0) == (num_blocks == 8)
    assert results[8] == results[64]


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"temperature": 0.7}, "temperature"),
        ({"top_p": 0.9}, "top_p"),
        ({"stop": ["x"]}, "stop"),
        ({"logprobs": 2}, "logprobs"),
        ({"n": 3}, "best_of"),
    ],
)
def test_sampling_fields_that_beam_search_refuses(changes, param):
    values = {"temperature": 0.0, "beam": BeamSpec(2), **changes}
    with pytest.raises(InvalidRequestError) as err:
        SamplingParams(**values)
    assert err.value.param == param


def test_beam_request_beside_greedy_ones_changes_neither():
    """Beams and sampled sequences share batches; each gets what it gets alone, and the
    beam request reports the root's queue time."""

    def run(with_beam: bool, with_greedy: bool) -> dict:
        core = make_core(block_size=4)
        if with_beam:
            beam = beam_params(4, n=2)
            core.add_request(GenerationRequest("b", beam, prompt_token_ids=prompt(9)))
        if with_greedy:
            greedy = SamplingParams(temperature=0.0, max_tokens=6)
            core.add_request(GenerationRequest("g", greedy, prompt_token_ids=prompt(7)))
        final = run_core(core)
        assert all(out.queue_time_s is not None for out in final.values())
        return {k: [o.token_ids for o in out.outputs] for k, out in final.items()}

    both = run(True, True)
    assert both["b"] == run(True, False)["b"]
    assert both["g"] == run(False, True)["g"]


def test_beam_width_is_checked_against_the_limits():
    from tokenmill.config import LimitsConfig

    core = make_core(limits=LimitsConfig(max_n=4))
    with pytest.raises(InvalidRequestError) as err:
        core.add_request(GenerationRequest("w", beam_params(8), prompt_token_ids=prompt(4)))
    assert err.value.param == "best_of"
    core = make_core(max_seqs=2, max_queue=1)
    with pytest.raises(InvalidRequestError) as err:
        core.add_request(GenerationRequest("c", beam_params(4), prompt_token_ids=prompt(4)))
    assert err.value.param == "best_of" and "never be held" in str(err.value)


def test_forks_wait_for_a_seat_rather_than_exceed_max_num_seqs():
    """With 3 of 4 seats taken by sampled sequences, a width-4 search forks into a full
    batch: its forks queue for seats (recomputing from the prefix cache) instead of
    running as extra sequences, and the search returns what it returns alone."""

    def run(others: int) -> tuple[list[list[int]], int]:
        core = make_core(block_size=4, max_seqs=4)
        for i in range(others):
            greedy = SamplingParams(temperature=0.0, max_tokens=20)
            core.add_request(GenerationRequest(f"g{i}", greedy, prompt_token_ids=prompt(5)))
        beam = beam_params(4, n=2)
        core.add_request(GenerationRequest("b", beam, prompt_token_ids=prompt(9)))
        most, finals = 0, {}
        while core.has_unfinished():
            for out in core.step():
                if out.finished:
                    finals[out.request_id] = out
            most = max(most, len(core.scheduler.running))
        assert core.kv.pool.num_used == 0
        return [o.token_ids for o in finals["b"].outputs], most

    alone, most_alone = run(0)
    crowded, most_crowded = run(3)
    assert most_alone == 4
    assert most_crowded <= 4
    assert crowded == alone
