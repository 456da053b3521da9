"""The shared server, driven with the official openai SDK as real clients drive it."""

from __future__ import annotations

import time

import openai
import pytest
from openapi_spec_validator import validate

from tests.e2e.conftest import ServerProcess

pytestmark = pytest.mark.slow
CHAT = [{"role": "user", "content": "Name three colours."}]
PROMPT = "The capital of France is"


def chat_text(client: openai.OpenAI, model: str, **kwargs) -> tuple[str, str]:
    r = client.chat.completions.create(model=model, **kwargs)
    return r.choices[0].message.content, r.choices[0].finish_reason


def streamed_chat(client: openai.OpenAI, model: str, **kwargs) -> tuple[str, str | None]:
    text, finish = "", None
    for chunk in client.chat.completions.create(model=model, stream=True, **kwargs):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


def tokenize(server: ServerProcess, **body) -> list[int]:
    return server.http.post("/tokenize", json=body).json()["tokens"]


def test_chat_greedy_stream_equals_non_stream_at_length(server: ServerProcess, model_name: str):
    # Past EOS to a fixed max_tokens: the length is the only way this one ends.
    client = server.client()
    args = {
        "messages": CHAT,
        "max_tokens": 12,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    whole = chat_text(client, model_name, **args)
    assert whole[0] and whole[1] == "length"
    assert streamed_chat(client, model_name, **args) == whole


def test_chat_greedy_stream_equals_non_stream_at_eos(server: ServerProcess, model_name: str):
    # Greedy, the packaged model answers this and emits EOS well inside 32 tokens in
    # every precision (tests/model/test_smollm_parity.py::test_capital_of_france).
    client = server.client()
    question = [{"role": "user", "content": "What is the capital of France?"}]
    args = {"messages": question, "max_tokens": 32, "temperature": 0}
    whole = chat_text(client, model_name, **args)
    assert whole == ("The capital of France is Paris.", "stop")
    assert streamed_chat(client, model_name, **args) == whole


def test_completion_greedy_stream_equals_non_stream(server: ServerProcess, model_name: str):
    client = server.client()
    args = {"model": model_name, "prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    whole = client.completions.create(**args).choices[0]
    chunks = list(client.completions.create(stream=True, **args))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.text
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def test_n3_with_seed_is_deterministic_and_streams_by_index(server: ServerProcess, model_name: str):
    client = server.client()
    args = {
        "model": model_name,
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "n": 3,
        "seed": 1234,
        "temperature": 1.0,
        "extra_body": {"ignore_eos": True},
    }
    first = client.completions.create(**args)
    second = client.completions.create(**args)
    texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
    assert [c.index for c in sorted(first.choices, key=lambda c: c.index)] == [0, 1, 2]
    assert texts == [c.text for c in sorted(second.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1, "three samples at temperature 1 should not all agree"
    streamed = {0: "", 1: "", 2: ""}
    for chunk in client.completions.create(stream=True, **args):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert [streamed[i] for i in range(3)] == texts
    assert first.usage.completion_tokens == 3 * 8
    assert [c.finish_reason for c in first.choices] == ["length"] * 3


def test_echo_logprobs_shaped_as_lm_eval_reads_them(server: ServerProcess, model_name: str):
    """lm-eval's loglikelihood: echo the prompt, max_tokens 1, logprobs 1, then read
    token_logprobs[ctxlen:-1] and compare each with max(top_logprobs)."""
    context, continuation = "The capital of France is", " Paris"
    ctx_ids = tokenize(server, prompt=context)
    full_ids = tokenize(server, prompt=context + continuation)
    r = server.client().completions.create(
        model=model_name,
        prompt=full_ids,
        max_tokens=1,
        echo=True,
        logprobs=1,
        temperature=0,
        seed=1,
    )
    lp = r.choices[0].logprobs
    n = len(full_ids)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:])
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    for tok, top in zip(lp.token_logprobs[1:], lp.top_logprobs[1:]):
        assert tok <= max(top.values()) + 1e-6
    # The generated (greedy) token is the most likely one.
    assert lp.token_logprobs[-1] == pytest.approx(max(lp.top_logprobs[-1].values()), abs=1e-5)
    ctxlen = len(ctx_ids)
    score = sum(lp.token_logprobs[ctxlen:-1])
    assert score < 0 and len(lp.token_logprobs[ctxlen:-1]) == n - ctxlen
    assert r.usage.prompt_tokens == n and r.usage.completion_tokens == 1

    zero = server.client().completions.create(
        model=model_name, prompt=full_ids, max_tokens=0, echo=True, logprobs=0
    )
    zlp = zero.choices[0].logprobs
    assert (
        zero.choices[0].text
        == server.http.post("/detokenize", json={"tokens": full_ids}).json()["prompt"]
    )
    assert len(zlp.tokens) == n
    assert zlp.token_logprobs[1:] == pytest.approx(lp.token_logprobs[1:n], abs=1e-4)


def test_chat_logprobs_shape(server: ServerProcess, model_name: str):
    r = server.client().chat.completions.create(
        model=model_name,
        messages=CHAT,
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-5)
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )


def test_list_of_parts_content_is_joined(server: ServerProcess, model_name: str):
    client = server.client()
    args = {"max_tokens": 8, "temperature": 0}
    parts = [{"type": "text", "text": "Name three"}, {"type": "text", "text": "colours."}]
    as_parts = chat_text(client, model_name, messages=[{"role": "user", "content": parts}], **args)
    as_text = chat_text(
        client, model_name, messages=[{"role": "user", "content": "Name three\ncolours."}], **args
    )
    assert as_parts == as_text
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=model_name,
            max_tokens=2,
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ],
        )
    assert "'image_url' is not supported" in err.value.message


def test_stop_string_is_never_partly_emitted(server: ServerProcess, model_name: str):
    client = server.client()
    args = {
        "model": model_name,
        "prompt": "Once upon a time",
        "max_tokens": 24,
        "temperature": 0,
        "extra_body": {"ignore_eos": True},
    }
    full = client.completions.create(**args).choices[0].text
    at = len(full) // 2
    stop = full[at : at + 4]
    at = full.index(stop)
    assert at > 0 and stop.strip(), f"pick a better stop from {full!r}"
    stopped = client.completions.create(stop=[stop], **args).choices[0]
    assert stopped.text == full[:at]
    assert stopped.finish_reason == "stop"
    pieces = [c.choices[0].text for c in client.completions.create(stop=stop, stream=True, **args)]
    assert "".join(pieces) == full[:at]


def test_usage_counts_equal_the_tokenizer(server: ServerProcess, model_name: str):
    client = server.client()
    fixed = {"max_tokens": 5, "temperature": 0, "extra_body": {"ignore_eos": True}}
    r = client.chat.completions.create(model=model_name, messages=CHAT, **fixed)
    assert r.usage.prompt_tokens == len(tokenize(server, messages=CHAT))
    assert r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    c = client.completions.create(model=model_name, prompt=PROMPT, logprobs=0, **fixed)
    assert c.usage.prompt_tokens == len(tokenize(server, prompt=PROMPT))
    assert c.usage.completion_tokens == len(c.choices[0].logprobs.tokens) == 5

    chunks = list(
        client.chat.completions.create(
            model=model_name,
            messages=CHAT,
            stream=True,
            stream_options={"include_usage": True},
            **fixed,
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.usage.total_tokens,
    )
    assert all(ch.usage is None for ch in chunks[:-1])


def test_errors_have_status_and_message(server: ServerProcess, model_name: str):
    client = server.client()
    max_len = server.http.get("/v1/models").json()["data"][0]["max_model_len"]

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model_name, messages=CHAT, temperature=-1)
    assert err.value.status_code == 400 and "temperature" in err.value.message

    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=model_name, prompt=PROMPT, max_tokens=max_len * 2)
    prompt_len = len(tokenize(server, prompt=PROMPT))
    assert err.value.code == "context_length_exceeded"
    assert str(max_len) in err.value.message and str(prompt_len) in err.value.message

    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert err.value.status_code == 404 and "no-such-model" in err.value.message

    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=model_name,
            messages=CHAT,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "no-such-type"}},
            },
        )
    assert "response_format" in err.value.message and "no-such-type" in err.value.message

    big = server.http.post("/v1/completions", json={"prompt": "x" * (1_100_000)})
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"

    bad_json = server.http.post(
        "/v1/chat/completions", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]

    wrong_type = server.http.post("/v1/chat/completions", json={"messages": "hi", "n": "many"})
    body = wrong_type.json()
    assert wrong_type.status_code == 400 and set(body) == {"error"}
    assert "loc" not in str(body) and "messages" in body["error"]["message"]


def test_disconnect_mid_stream_frees_the_request(server: ServerProcess, model_name: str):
    idle = server.stats()
    assert idle["num_running"] == 0
    body = {
        "model": model_name,
        "messages": CHAT,
        "max_tokens": 400,
        "ignore_eos": True,
        "stream": True,
    }
    with server.http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = 0
        for line in r.iter_lines():
            events += line.startswith("data: ")
            if events == 3:
                # Checked inside the loop: leaving it drops the line iterator, and
                # closing that closes the stream, which the server may see before
                # this stats request (it did once, on a loaded machine).
                assert server.stats()["num_running"] == 1
                break
        assert events == 3
    deadline = time.monotonic() + 10
    while True:
        stats = server.stats()
        if stats["num_running"] == 0 and stats["kv_blocks_used"] == idle["kv_blocks_used"]:
            break
        assert time.monotonic() < deadline, f"request not freed: {stats}"
        time.sleep(0.05)
    assert stats["num_waiting"] == 0


def test_tokenizer_endpoints(server: ServerProcess):
    tokens = tokenize(server, prompt="Hello world", add_special_tokens=False)
    assert tokens
    assert server.http.post("/detokenize", json={"tokens": tokens}).json() == {
        "prompt": "Hello world"
    }
    info = server.http.get("/tokenizer_info").json()
    assert info["eos_token"] and "{%" in info["chat_template"]


def test_models_health_version_openapi(server: ServerProcess, model_name: str):
    client = server.client()
    assert [m.id for m in client.models.list().data] == [model_name]
    assert client.models.retrieve(model_name).id == model_name
    assert server.http.get("/health").status_code == 200
    assert server.http.get("/ready").json() == {"status": "ready"}
    assert server.http.get("/version").json()["version"]
    validate(server.http.get("/openapi.json").json())
    assert f"serving {model_name} at {server.url}/v1 (model loaded" in server.full_log()
