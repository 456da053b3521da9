"""The ShareGPT reader on complete and truncated JSON arrays."""

from __future__ import annotations

import json

import pytest

from tokenmill.bench.sharegpt import ShareGPTReader, first_exchange


def record(i: int, first: str = "human", second: str = "gpt") -> dict:
    return {
        "id": f"r{i}",
        "conversations": [
            {"from": first, "value": f'question {i} with "quotes", [brackets] and {{braces}}'},
            {"from": second, "value": f"answer {i} \u00e9\u4e2d"},
        ],
    }


def write_array(path, records, cut_chars: int = 0) -> None:
    text = json.dumps(records, indent=2, ensure_ascii=False)
    path.write_text(text[: len(text) - cut_chars] if cut_chars else text, encoding="utf-8")


@pytest.mark.parametrize("chunk_chars", [7, 64, 1 << 20])
def test_truncated_file_yields_the_records_that_parse(tmp_path, chunk_chars):
    path = tmp_path / "sg.json"
    records = [record(i) for i in range(5)]
    text = json.dumps(records, indent=2)
    cut = text.index('"r4"')  # mid-way through the fifth record
    path.write_text(text[:cut])
    reader = ShareGPTReader(path, chunk_chars=chunk_chars)
    got = list(reader)
    assert [r["id"] for r in got] == ["r0", "r1", "r2", "r3"]
    assert got[2] == records[2]
    assert reader.records == 4
    assert reader.truncated


def test_complete_file_is_not_truncated(tmp_path):
    path = tmp_path / "sg.json"
    write_array(path, [record(i) for i in range(3)])
    reader = ShareGPTReader(path, chunk_chars=5)
    assert [r["id"] for r in reader] == ["r0", "r1", "r2"]
    assert not reader.truncated


def test_file_cut_between_records_keeps_all_complete_ones(tmp_path):
    path = tmp_path / "sg.json"
    text = json.dumps([record(0), record(1)])
    path.write_text(text[:-1] + ",\n")  # the closing bracket lost: "...}," and then nothing
    reader = ShareGPTReader(path)
    assert [r["id"] for r in reader] == ["r0", "r1"]
    assert reader.truncated


def test_not_an_array_is_refused(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text('{"id": 1}')
    with pytest.raises(ValueError, match="JSON array"):
        list(ShareGPTReader(path))


def test_first_exchange_needs_a_human_turn_then_a_model_turn():
    conv = first_exchange(record(1))
    assert conv is not None and conv.id == "r1" and conv.reply.startswith("answer 1")
    assert first_exchange(record(2, first="gpt", second="human")) is None
    assert first_exchange({"id": "x", "conversations": [{"from": "human", "value": "hi"}]}) is None
    assert first_exchange({"id": "x"}) is None
