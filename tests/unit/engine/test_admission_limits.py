"""Admission limits of issue 14: stop strings (item 1), n and the queue counted in
sequences (item 3), the cheap prompt bound (item 4), lone surrogates (item 5), and
requests that can never fit (item 6). Each refusal is a 400 naming the field, and the
engine keeps serving the others."""

from __future__ import annotations

import pytest

from tokenmill.config import LimitsConfig
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import ContextLengthError, InvalidRequestError, QueueFullError
from tokenmill.sampling_params import SamplingParams

from .factories import make_core, run_core

GREEDY = SamplingParams(temperature=0.0, max_tokens=4)


def refused(core, params: SamplingParams, prompt="a", **kwargs) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as err:
        core.add_request(GenerationRequest("bad", params, prompt=prompt, **kwargs))
    assert not core.has_unfinished()
    return err.value


def still_serves(core) -> None:
    core.add_request(GenerationRequest("ok", GREEDY, prompt="a"))
    assert run_core(core)["ok"].outputs[0].text == "bcda"


@pytest.mark.parametrize(
    "stop, fragment",
    [
        (["x"] * 9, "stop has 9 strings; at most 8"),
        (["ok", "y" * 33], "stop[1] has 33 characters; at most 32"),
    ],
)
def test_too_many_or_too_long_stop_strings_are_refused(stop, fragment):
    core = make_core(limits=LimitsConfig(max_stop_strings=8, max_stop_string_chars=32))
    err = refused(core, GREEDY.clone(stop=stop))
    assert err.param == "stop" and fragment in err.message
    still_serves(core)


def test_n_above_max_n_is_refused():
    core = make_core(limits=LimitsConfig(max_n=4))
    err = refused(core, GREEDY.clone(n=5))
    assert err.param == "n" and "--max-n" in err.message


def test_a_request_larger_than_the_whole_queue_is_a_400_not_a_429():
    # Issue: n=100 was admitted to a queue of 4, then every other client got 429; and a
    # request that can never fit got a retryable 429, so SDKs retried it forever.
    core = make_core(max_seqs=2, max_queue=4, limits=LimitsConfig(max_n=128))
    err = refused(core, GREEDY.clone(n=7))
    assert err.code == "exceeds_capacity" and "at most 6" in err.message
    still_serves(core)


def test_the_queue_counts_sequences_not_requests():
    core = make_core(max_seqs=2, max_queue=4)
    core.add_request(GenerationRequest("a", GREEDY.clone(n=4), prompt="a"))
    core.add_request(GenerationRequest("b", GREEDY.clone(n=2), prompt="a"))
    assert core.scheduler.num_waiting == 6
    with pytest.raises(QueueFullError) as err:
        core.add_request(GenerationRequest("c", GREEDY, prompt="a"))
    assert "6 sequences are waiting" in err.value.message
    run_core(core)
    core.add_request(GenerationRequest("c", GREEDY.clone(n=6), prompt="a"))


def test_a_prompt_longer_than_any_context_is_refused_before_it_is_tokenized():
    core = make_core(max_model_len=64)
    calls = []
    encode = core.tokenizer.encode
    core.tokenizer.encode = lambda text, **kw: calls.append(len(text)) or encode(text, **kw)
    limit = core.inputs.max_prompt_chars
    with pytest.raises(ContextLengthError) as err:
        core.add_request(GenerationRequest("big", GREEDY, prompt="a" * (limit + 1)))
    assert calls == [] and f"at most {limit}" in err.value.message
    still_serves(core)
    assert calls == [1]


@pytest.mark.parametrize(
    "prompt, stop, param",
    [("ab\ud800c", [], "prompt"), ("abc", ["\udfff"], "stop")],
)
def test_lone_surrogates_are_a_400_naming_the_field(prompt, stop, param):
    core = make_core()
    err = refused(core, GREEDY.clone(stop=stop), prompt=prompt)
    assert err.param == param and "surrogate" in err.message
    still_serves(core)


def test_a_small_request_finishes_while_a_huge_one_holds_every_slot():
    core = make_core("abcd", max_seqs=4, max_model_len=256, num_blocks=256)
    core.add_request(GenerationRequest("huge", GREEDY.clone(n=4, max_tokens=200), prompt="a"))
    for _ in range(3):
        core.step()
    core.add_request(GenerationRequest("small", GREEDY.clone(max_tokens=4), prompt="b"))
    small_done_at = None
    for step in range(400):
        for out in core.step():
            if out.request_id == "small" and out.finished:
                small_done_at = step
        if small_done_at is not None:
            break
    assert small_done_at is not None and small_done_at <= 5
    assert core.scheduler.num_fairness_preemptions == 1
    assert "huge" in core._children  # still running: the small one did not wait for it
    final = run_core(core)
    assert [len(o.token_ids) for o in final["huge"].outputs] == [200] * 4
