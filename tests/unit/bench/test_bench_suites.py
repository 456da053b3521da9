"""The comparison's request sets: every repeat its own prompts, no shared prefixes."""

from __future__ import annotations

from tests.unit.bench.factories import MergingTokenizer
from tokenmill.bench.record import THROUGHPUT, TTFT
from tokenmill.bench.serve import WorkloadConfig
from tokenmill.bench.suites import throughput_suite, ttft_suite


def test_each_repeat_of_each_level_sends_its_own_prompts():
    suite = throughput_suite(
        MergingTokenizer(), WorkloadConfig(input_len=20, output_len=3), (1, 4), repeats=3
    )
    assert suite.name == THROUGHPUT and suite.keys == (1, 4)
    assert sorted(suite.requests) == [(1, 0), (1, 1), (1, 2), (4, 0), (4, 1), (4, 2)]
    assert [len(suite.requests[(c, 0)]) for c in (1, 4)] == [8, 8]
    prompts = [r.prompt for reqs in suite.requests.values() for r in reqs] + [suite.warm_up.prompt]
    assert len(prompts) == 49 and len(set(prompts)) == 49
    assert suite.concurrency(4) == 4 and suite.max_concurrency == 4
    assert suite.max_tokens_per_request == 23


def test_ttft_lengths_are_exact_and_no_prompt_is_the_start_of_a_longer_one():
    suite = ttft_suite(MergingTokenizer(), (8, 24), per_repeat=2, output_len=4, repeats=2)
    assert suite.name == TTFT and suite.concurrency(24) == 1 and suite.max_concurrency == 1
    for (length, _), reqs in suite.requests.items():
        assert len(reqs) == 2 and all(r.prompt_len == length for r in reqs)
    short = [r.prompt for rep in (0, 1) for r in suite.requests[(8, rep)]]
    long = [r.prompt for rep in (0, 1) for r in suite.requests[(24, rep)]]
    assert not any(b.startswith(a) for a in short for b in long)
    assert suite.max_tokens_per_request == 28
    assert suite.description["prompt_lens"] == [8, 24]
