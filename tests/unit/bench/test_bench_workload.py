"""Workload building with a toy tokenizer whose round trip merges tokens."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from tests.unit.bench.factories import MergingTokenizer, WordTokenizer
from tokenmill.bench.tokenizer import ServerTokenizer
from tokenmill.bench.workload import fit_prompt, random_requests, sharegpt_requests


def test_fit_prompt_reaches_the_exact_length_despite_merges():
    tok = MergingTokenizer()
    rng = random.Random(0)
    for length in (1, 2, 17, 100):
        text, n = fit_prompt(tok, rng, [0, 1, 2, 3], length)
        assert n == length
        assert len(tok.encode(text)) == length


def test_random_requests_are_seeded_and_avoid_special_tokens():
    tok = MergingTokenizer()
    a = random_requests(tok, 4, input_len=20, output_len=7, seed=3)
    b = random_requests(tok, 4, input_len=20, output_len=7, seed=3)
    c = random_requests(tok, 4, input_len=20, output_len=7, seed=4)
    assert a == b and a != c
    assert all(r.prompt_len == 20 and r.output_len == 7 for r in a)
    assert all("<s>" not in r.prompt for r in a)
    assert len({r.prompt for r in a}) == 4


def test_random_requests_refuse_empty_shapes():
    with pytest.raises(ValueError):
        random_requests(MergingTokenizer(), 1, input_len=0, output_len=5, seed=0)


def write_sharegpt(path, pairs, truncate: bool = True) -> None:
    records = [
        {
            "id": str(i),
            "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}],
        }
        for i, (q, a) in enumerate(pairs)
    ]
    text = json.dumps(records)
    path.write_text(text[:-40] if truncate else text)


def test_sharegpt_requests_filter_like_vllm_and_use_reply_lengths(tmp_path):
    path = tmp_path / "sg.json"
    long_q = " ".join(["w"] * 1100)
    pairs = [
        ("one two three four", "a b c d e"),  # 4 and 5 tokens: kept
        ("too short", "a b c d e"),  # prompt < 4 tokens: dropped
        (long_q, "a b c d"),  # prompt > 1024: dropped
        ("q r s t u v", "a b c d e f g"),  # kept
        ("cut off by the truncation", "x y z w v"),  # lost in the truncated tail
    ]
    write_sharegpt(path, pairs)
    reqs = sharegpt_requests(WordTokenizer(), 2, seed=0, path=path)
    assert sorted((r.prompt_len, r.output_len) for r in reqs) == [(4, 5), (6, 7)]
    fixed = sharegpt_requests(WordTokenizer(), 2, seed=0, output_len=9, path=path)
    assert {r.output_len for r in fixed} == {9}
    with pytest.raises(ValueError, match="only 2 usable"):
        sharegpt_requests(WordTokenizer(), 3, seed=0, path=path)


def llama_server_handler(request: httpx.Request) -> httpx.Response:
    """llama-server's shapes: {"content"} in, and an empty list for any other body."""
    body = json.loads(request.content or b"{}")
    if request.url.path == "/v1/models":
        return httpx.Response(200, json={"data": [{"id": "m", "meta": {"n_vocab": 7}}]})
    if request.url.path == "/tokenize":
        text = body.get("content", "")
        return httpx.Response(200, json={"tokens": [ord(c) - 97 for c in text]})
    if request.url.path == "/detokenize":
        return httpx.Response(200, json={"content": "".join(chr(97 + t) for t in body["tokens"])})
    return httpx.Response(404)


def test_server_tokenizer_speaks_llama_server_shapes():
    tok = ServerTokenizer("http://x", "m", transport=httpx.MockTransport(llama_server_handler))
    assert tok.vocab_size == 7
    assert tok.encode("abc") == [0, 1, 2]
    assert tok.decode([2, 0]) == "ca"
    reqs = random_requests(tok, 2, input_len=5, output_len=3, seed=0)
    assert [r.prompt_len for r in reqs] == [5, 5]
