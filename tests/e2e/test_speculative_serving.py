"""`tokenmill serve --speculative ngram` through the openai SDK: greedy answers equal the
plain server's, streamed and not, and the figures reach /v1/engine/stats and /metrics."""

from __future__ import annotations

import pytest

from .conftest import start_server

pytestmark = pytest.mark.slow  # the real model (and, for e2e, servers)

PARAGRAPH = (
    "The paged KV cache stores keys and values in fixed-size blocks, so that sequences of "
    "different lengths can share one pool of memory without fragmentation."
)
MESSAGES = [{"role": "user", "content": "Repeat the following text exactly:\n\n" + PARAGRAPH}]


@pytest.fixture(scope="module")
def spec_server(tmp_path_factory):
    srv = start_server(tmp_path_factory, "spec", "--speculative", "ngram", "--max-num-seqs", "4")
    yield srv
    assert srv.stop() == 0, srv.log()


def test_greedy_answers_match_the_plain_server_streamed_and_not(server, spec_server):
    model = spec_server.http.get("/v1/models").json()["data"][0]["id"]
    kwargs = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 48}
    plain = server.client().chat.completions.create(**kwargs).choices[0].message.content
    spec = spec_server.client().chat.completions.create(**kwargs).choices[0].message.content
    assert spec == plain and PARAGRAPH[:40] in spec
    chunks = spec_server.client().chat.completions.create(**kwargs, stream=True)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain
    stats = spec_server.stats()
    assert stats["spec_accepted_tokens"] > 20
    assert stats["tokens_per_sequence_step"] > 1.5
    metrics = spec_server.http.get("/metrics").text
    assert "tokenmill:spec_decode_num_accepted_tokens_total" in metrics


def test_a_draft_model_server_answers_as_the_plain_one_and_counts(server, tmp_path_factory):
    srv = start_server(tmp_path_factory, "draft", "--speculative", "draft:smollm2-135m-instruct")
    try:
        model = srv.http.get("/v1/models").json()["data"][0]["id"]
        kwargs = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 24}
        plain = server.client().chat.completions.create(**kwargs).choices[0].message.content
        spec = srv.client().chat.completions.create(**kwargs).choices[0].message.content
        assert spec == plain
        stats = srv.stats()
        assert stats["spec_draft_tokens"] > 0 and stats["spec_acceptance_rate"] > 0.5
        metrics = srv.http.get("/metrics").text
        line = next(
            x
            for x in metrics.splitlines()
            if x.startswith("tokenmill:spec_decode_num_draft_tokens_total")
        )
        assert float(line.split()[-1]) == stats["spec_draft_tokens"]
    finally:
        assert srv.stop() == 0, srv.log()
