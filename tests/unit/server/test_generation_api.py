"""Response shapes of /v1/chat/completions and /v1/completions, streamed and not."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.unit.server.fake_engine import BOS, OFFSET, FakeEngine

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def sse_events(text: str) -> list:
    """Parses an SSE body strictly: every event is one `data: ` line then a blank line."""
    assert text.endswith("\n\n")
    events = []
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: "), block
        assert "\n" not in block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def chat(client: TestClient, **body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return client.post(CHAT, json=body)


def test_chat_response_shape_and_usage(client: TestClient, engine: FakeEngine):
    r = chat(client, model="fake-model", max_tokens=50)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello world"}
    assert choice["finish_reason"] == "stop"
    prompt_ids = engine.calls[0].prompt_token_ids
    assert prompt_ids == engine.tokenizer.encode("<user>hi\n<assistant>", add_special_tokens=False)
    assert body["usage"]["prompt_tokens"] == len(prompt_ids)
    assert body["usage"]["completion_tokens"] == len("Hello world") + 1  # + EOS
    assert body["usage"]["total_tokens"] == len(prompt_ids) + len("Hello world") + 1


def test_chat_content_parts_are_joined(client: TestClient, engine: FakeEngine):
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    r = chat(
        client,
        messages=[{"role": "developer", "content": "sys"}, {"role": "user", "content": parts}],
    )
    assert r.status_code == 200
    sent = engine.tokenizer.decode(engine.calls[0].prompt_token_ids)
    assert sent == "<system>sys\n<user>one\ntwo\n<assistant>"


def test_chat_max_tokens_gives_length(client: TestClient):
    r = chat(client, max_completion_tokens=3, max_tokens=50)
    choice = r.json()["choices"][0]
    assert choice["message"]["content"] == "Hel"
    assert choice["finish_reason"] == "length"
    assert r.json()["usage"]["completion_tokens"] == 3


def test_chat_stream_frames_match_non_stream(client: TestClient):
    whole = chat(client, max_tokens=50).json()["choices"][0]["message"]["content"]
    r = chat(client, max_tokens=50, stream=True)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == whole
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert all(c["usage"] is None for c in chunks)


def test_chat_stream_include_usage_ends_with_usage_chunk(client: TestClient):
    r = chat(client, max_tokens=4, stream=True, stream_options={"include_usage": True})
    events = sse_events(r.text)
    last = events[-2]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 4
    assert last["usage"]["total_tokens"] == last["usage"]["prompt_tokens"] + 4


def test_chat_n3_stream_indexes_each_choice(client: TestClient):
    r = chat(client, n=3, max_tokens=50, seed=7, stream=True)
    events = sse_events(r.text)[:-1]
    texts = {0: "", 1: "", 2: ""}
    finish = {}
    for ev in events:
        (choice,) = ev["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    assert texts == {i: f"{i}Hello world" for i in range(3)}
    assert finish == {0: "stop", 1: "stop", 2: "stop"}


def test_chat_logprobs_shape(client: TestClient):
    r = chat(client, max_tokens=2, logprobs=True, top_logprobs=1)
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["H", "e"]
    assert content[0]["logprob"] == -0.25
    assert content[0]["bytes"] == [ord("H")]
    assert content[0]["top_logprobs"] == [{"token": "H", "logprob": -0.25, "bytes": [72]}]


def test_chat_without_logprobs_has_null_logprobs(client: TestClient, engine: FakeEngine):
    r = chat(client, max_tokens=2)
    assert r.json()["choices"][0]["logprobs"] is None
    assert engine.calls[0].params.logprobs is None


def test_completion_echo_logprobs_as_lm_eval_reads_them(client: TestClient, engine: FakeEngine):
    r = client.post(
        COMPLETIONS,
        json={"prompt": "ab", "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0},
    )
    assert r.status_code == 200
    (choice,) = r.json()["choices"]
    assert choice["text"] == "abH"
    lp = choice["logprobs"]
    # BOS, a, b from the prompt, then the generated H.
    assert lp["tokens"] == ["<s>", "a", "b", "H"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert lp["token_logprobs"][1:] == [-0.25, -0.25, -0.25]
    assert lp["text_offset"] == [0, 3, 4, 5]
    # lm-eval: ctxlen = 3 prompt tokens; score [ctxlen:-1], greedy iff logprob == max(top).
    ctx = 3
    assert lp["token_logprobs"][ctx:-1] == []
    for tok, top in zip(lp["token_logprobs"][1:], lp["top_logprobs"][1:]):
        assert tok == max(top.values())
    assert engine.calls[0].params.prompt_logprobs == 1


def test_completion_echo_max_tokens_zero_scores_prompt_only(client: TestClient):
    r = client.post(
        COMPLETIONS, json={"prompt": [BOS, 100], "max_tokens": 0, "echo": True, "logprobs": 0}
    )
    (choice,) = r.json()["choices"]
    assert choice["logprobs"]["tokens"] == ["<s>", chr(100 - OFFSET)]
    assert choice["logprobs"]["token_logprobs"] == [None, -0.25]
    assert r.json()["usage"]["completion_tokens"] == 0


def test_completion_prompt_list_numbers_choices_by_prompt_then_n(client: TestClient):
    r = client.post(COMPLETIONS, json={"prompt": ["a", "b"], "n": 2, "max_tokens": 2})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == ["0H", "1H", "0H", "1H"]
    assert r.json()["usage"]["prompt_tokens"] == 4  # BOS + one byte, twice


def test_completion_token_id_prompts(client: TestClient, engine: FakeEngine):
    r = client.post(COMPLETIONS, json={"prompt": [[BOS, 70], [BOS, 71, 72]], "max_tokens": 1})
    assert r.status_code == 200
    assert [c.prompt_token_ids for c in engine.calls] == [[BOS, 70], [BOS, 71, 72]]


def test_completion_stream_echo_and_offsets(client: TestClient):
    r = client.post(
        COMPLETIONS,
        json={"prompt": "ab", "max_tokens": 3, "echo": True, "logprobs": 1, "stream": True},
    )
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [e["choices"][0] for e in events[:-1]]
    assert chunks[0]["text"].startswith("abH")
    assert "".join(c["text"] for c in chunks) == "abHel"
    offsets = [o for c in chunks for o in c["logprobs"]["text_offset"]]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert chunks[-1]["finish_reason"] == "length"


def test_completion_stream_equals_non_stream(client: TestClient):
    body = {"prompt": "x", "max_tokens": 20, "temperature": 0}
    whole = client.post(COMPLETIONS, json=body).json()["choices"][0]["text"]
    events = sse_events(client.post(COMPLETIONS, json={**body, "stream": True}).text)
    assert "".join(e["choices"][0]["text"] for e in events[:-1]) == whole == "Hello world"


def test_sampling_fields_reach_the_engine(client: TestClient, engine: FakeEngine):
    body = {
        "prompt": "x",
        "max_tokens": 5,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 4,
        "min_p": 0.1,
        "seed": 3,
        "stop": "wor",
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "repetition_penalty": 1.2,
        "logit_bias": {"50": -100},
        "ignore_eos": True,
        "priority": -1,
    }
    assert client.post(COMPLETIONS, json=body).status_code == 200
    call = engine.calls[0]
    p = call.params
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (
        5,
        0.5,
        0.9,
        4,
        0.1,
        3,
    )
    assert p.stop == ["wor"]
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.5, -0.5, 1.2)
    assert p.logit_bias == {50: -100.0}
    assert p.ignore_eos is True
    assert call.priority == -1


def test_chat_default_max_tokens_is_up_to_context(client: TestClient, engine: FakeEngine):
    chat(client)
    assert engine.calls[0].params.max_tokens is None


def test_eos_token_is_not_in_text(client: TestClient):
    r = client.post(COMPLETIONS, json={"prompt": "x", "max_tokens": 40, "logprobs": 0})
    lp = r.json()["choices"][0]["logprobs"]
    assert r.json()["choices"][0]["text"] == "Hello world"
    assert len(lp["tokens"]) == len("Hello world") + 1
