"""EngineCore over a scripted model: admission checks, stopping rules, abort."""

from __future__ import annotations

import pytest

from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import InvalidRequestError
from tokenmill.sampling_params import SamplingParams

from .factories import ByteTokenizer, make_core, run_core

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


def test_scripted_core_continues_the_text():
    core = make_core("abcd")
    core.add_request(GenerationRequest("r", GREEDY, prompt="a"))
    out = run_core(core)["r"].outputs[0]
    assert out.text == "bcdabcda" and out.finish_reason == "length"
    assert core.stats().kv_blocks_used == 0


@pytest.mark.parametrize(
    "changes, param",
    [
        ({"logit_bias": {100_000: 1.0}}, "logit_bias"),
        ({"logit_bias": {-1: 1.0}}, "logit_bias"),
        ({"stop_token_ids": [100_000], "min_tokens": 2}, "stop_token_ids"),
        ({"stop_token_ids": [-5]}, "stop_token_ids"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_refused_at_admission(changes, param):
    # They used to reach the sampler and raise IndexError inside a step, which kills
    # the engine thread and every other request with it.
    core = make_core()
    with pytest.raises(InvalidRequestError) as err:
        core.add_request(GenerationRequest("bad", GREEDY.clone(**changes), prompt="a"))
    assert err.value.param == param
    assert not core.has_unfinished()
    core.add_request(GenerationRequest("ok", GREEDY, prompt="a"))
    assert run_core(core)["ok"].outputs[0].finish_reason == "length"


def test_stop_string_waits_for_min_tokens():
    core = make_core("abcd")
    params = GREEDY.clone(stop=["b"], min_tokens=3, max_tokens=16)
    core.add_request(GenerationRequest("r", params, prompt="a"))
    out = run_core(core)["r"].outputs[0]
    # "b" is the first token, below min_tokens: the next "b" (token 5) ends it.
    assert out.text == "bcda"
    assert out.finish_reason == "stop" and out.stop_reason == "b"
    assert len(out.token_ids) == 5


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode("héllo")) == "héllo"


def test_request_id_reused_after_an_abort_in_the_queue_runs_the_new_request():
    # The aborted sequence stays in the waiting heap until it reaches the top; it used
    # to be recognised by id, so the new request with the same id was dropped in its
    # place and the aborted one ran, writing its tokens into the new request's output.
    core = make_core("abcd", max_seqs=1)
    core.add_request(GenerationRequest("busy", GREEDY.clone(max_tokens=4), prompt="a"))
    core.step()
    core.add_request(GenerationRequest("x", GREEDY.clone(max_tokens=3), prompt="a", priority=5))
    assert core.abort("x")[0].outputs[0].finish_reason == "abort"
    core.add_request(GenerationRequest("x", GREEDY, prompt="c", priority=-5))
    assert core.scheduler.num_waiting == 1
    out = run_core(core)["x"].outputs[0]
    assert out.text == "dabcdabc" and out.finish_reason == "length"
    assert core.scheduler.num_waiting == 0 and core.stats().kv_blocks_used == 0


def test_top_k_beyond_int64_samples_like_no_top_k():
    # top_k has no upper bound in the API; next to a row that does use top-k it reached
    # torch.tensor as is and overflowed inside a step, killing the engine.
    core = make_core("abcd")
    params = SamplingParams(temperature=0.1, max_tokens=4, seed=1)
    core.add_request(GenerationRequest("big", params.clone(top_k=10**20), prompt="a"))
    core.add_request(GenerationRequest("small", params.clone(top_k=2), prompt="a"))
    final = run_core(core)
    assert final["big"].outputs[0].text == final["small"].outputs[0].text == "bcda"
