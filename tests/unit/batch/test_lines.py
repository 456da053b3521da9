"""Parsing the Batch API's input lines and reading an input file."""

from __future__ import annotations

import json

import pytest

from tests.unit.batch.factories import CHAT, chat_line, completion_line, write_lines
from tokenmill.batch.input_file import MAX_LINES, read_input_file
from tokenmill.batch.lines import (
    BodyError,
    MalformedLine,
    RequestLine,
    parse_line,
    validate_body,
)
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.completion import CompletionRequest


def test_a_well_formed_line_is_a_request_for_its_endpoint():
    line = parse_line(chat_line("a-1", "hello"), 3)
    assert isinstance(line, RequestLine)
    assert (line.custom_id, line.url, line.kind) == ("a-1", CHAT, "chat")
    assert RequestLine.from_json(line.to_json()) == line
    body = validate_body(line)
    assert isinstance(body, ChatCompletionRequest) and body.messages[0].content == "hello"
    completion = parse_line(completion_line("b"), 1)
    assert completion.kind == "completion"
    assert isinstance(validate_body(completion), CompletionRequest)


@pytest.mark.parametrize(
    "text,code,custom_id,words",
    [
        ('{"custom_id": "x", "method": "POST", "url"', "invalid_json", "x", "not valid JSON"),
        ("not json at all", "invalid_json", None, "Line 7 is not valid JSON"),
        ("[1, 2]", "invalid_request", None, "must be a JSON object"),
        (
            json.dumps({"method": "POST", "url": CHAT, "body": {}}),
            "missing_custom_id",
            None,
            "custom_id",
        ),
        (json.dumps({"custom_id": 5, "url": CHAT}), "missing_custom_id", None, "non-empty string"),
        (
            json.dumps({"custom_id": "g", "method": "GET", "url": CHAT, "body": {}}),
            "invalid_method",
            "g",
            "method must be POST",
        ),
        (
            json.dumps({"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {}}),
            "invalid_url",
            "e",
            "/v1/chat/completions, /v1/completions",
        ),
        (
            json.dumps({"custom_id": "b", "method": "POST", "url": CHAT, "body": "hi"}),
            "invalid_body",
            "b",
            "body must be a JSON object",
        ),
        (
            json.dumps({"custom_id": "u", "method": "POST", "url": CHAT, "body": {}, "extra": 1}),
            "invalid_request",
            "u",
            "unknown field(s) extra",
        ),
    ],
)
def test_malformed_lines_say_what_is_wrong_and_keep_their_custom_id(text, code, custom_id, words):
    line = parse_line(text, 7)
    assert isinstance(line, MalformedLine)
    assert (line.code, line.custom_id) == (code, custom_id)
    assert words in line.message


def test_a_line_for_another_endpoint_than_the_batch_is_refused():
    line = parse_line(completion_line("c"), 2, endpoint=CHAT)
    assert isinstance(line, MalformedLine) and line.code == "mismatched_url"
    assert "differs from the batch's endpoint" in line.message


def test_an_invalid_body_is_the_endpoints_400():
    line = parse_line(json.dumps({"custom_id": "z", "method": "POST", "url": CHAT, "body": {}}))
    with pytest.raises(BodyError) as info:
        validate_body(line)
    assert info.value.status_code == 400 and info.value.param == "messages"
    with pytest.raises(BodyError) as info:
        validate_body(parse_line(chat_line("s", stream=True)))
    assert info.value.param == "stream" and "not supported in batch" in info.value.message


def test_reading_a_file_keeps_every_line_and_its_number(tmp_path):
    path = write_lines(
        tmp_path / "in.jsonl",
        [chat_line("a", model="m1"), "", "garbage", chat_line("a"), chat_line("b")],
    )
    parsed = read_input_file(path, CHAT)
    assert parsed.error is None and parsed.model == "m1"
    assert [(n, cid) for n, cid, _, _ in parsed.lines] == [
        (1, "a"),
        (3, None),
        (4, "a"),
        (5, "b"),
    ]
    errors = {n: err for n, _, request, err in parsed.lines if err is not None}
    assert set(errors) == {3, 4}
    assert errors[3]["error"]["code"] == "invalid_json" and errors[3]["response"] is None
    assert errors[4]["error"]["code"] == "duplicate_custom_id"
    assert "already used on line 1" in errors[4]["error"]["message"]
    requests = [request for _, _, request, err in parsed.lines if err is None]
    assert [RequestLine.from_json(r).custom_id for r in requests] == ["a", "b"]


def test_invalid_utf8_is_one_bad_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(chat_line("ok").encode() + b"\n\xff\xfe\n")
    parsed = read_input_file(path, CHAT)
    assert parsed.lines[1][3]["error"]["code"] == "invalid_encoding"


def test_a_file_without_requests_or_with_too_many_fails_as_a_whole(tmp_path):
    empty = read_input_file(write_lines(tmp_path / "e.jsonl", ["", "  "]), CHAT)
    assert empty.error["code"] == "empty_file"
    big = tmp_path / "big.jsonl"
    line = chat_line("x")
    with open(big, "w") as f:
        f.writelines(line.replace('"x"', f'"x{i}"') + "\n" for i in range(MAX_LINES + 1))
    parsed = read_input_file(big, CHAT)
    assert parsed.error["code"] == "too_many_requests"
    assert parsed.error["line"] == MAX_LINES + 1
