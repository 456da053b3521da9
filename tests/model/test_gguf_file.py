"""Our GGUF header reader against the `gguf` package's reader on a file with every
value type, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import quantize

from tokenmill.errors import ModelLoadError
from tokenmill.model.loader.gguf_file import GGUFFile


def test_metadata_and_tensors_match_gguf_reader(tmp_path):
    path = tmp_path / "t.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 7)
    w.add_int16("t.i16", -3)
    w.add_uint32("t.u32", 1 << 31)
    w.add_int64("t.i64", -(1 << 40))
    w.add_float32("t.f32", 0.1)
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ▁ 🤖")
    w.add_array("t.strs", ["a", "", "ü"])
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_array("t.bools", [True, False])
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    q = quantize(rng.standard_normal((4, 64)).astype(np.float32), GGMLQuantizationType.Q8_0)
    w.add_tensor("q8", q, raw_shape=q.shape, raw_dtype=GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours = GGUFFile.open(path)
    ref = GGUFReader(str(path))
    expected = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert ours.metadata == expected
    assert {k: type(v) for k, v in ours.metadata.items()} == {
        k: type(v) for k, v in expected.items()
    }
    assert ours.metadata["t.str"] == "héllo ▁ 🤖" and ours.metadata["t.strs"] == ["a", "", "ü"]
    for mine, theirs in zip(ours.tensors, ref.tensors, strict=True):
        assert mine.name == theirs.name and mine.tensor_type == theirs.tensor_type
        assert mine.shape == tuple(int(d) for d in theirs.shape)
        np.testing.assert_array_equal(mine.data, np.asarray(theirs.data).view(np.uint8).ravel())


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "x.gguf"
    path.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        GGUFFile.open(path)
