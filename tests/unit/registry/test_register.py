"""`optimize --register`: the models-file edit (atomic, max+1, refuses a clash) and the
CLI's checks, which must fail before any optimization work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenmill.cli.main import main
from tokenmill.errors import ConfigError
from tokenmill.gateway.models_file import (
    ModelSpec,
    add_version,
    next_version,
    read_models_file,
    spec_toml,
)
from tokenmill.optimize.registration import RegisterTarget, plan, register

MODELS = """\
# served by the edge box
[[models]]
name = "smollm2"
version = "1"
traffic = 90

[[models]]
name = "smollm2"
version = "7"
quantization = "int8"
traffic = 10

[[models]]
name = "minilm"
version = "1"
task = "embed"
"""


@pytest.fixture
def models_file(tmp_path: Path) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(MODELS)
    return path


def test_next_version_is_one_more_than_the_highest_numeric():
    specs = [
        ModelSpec("a", "1", traffic=50),
        ModelSpec("a", "12", traffic=50),
        ModelSpec("a", "beta", traffic=0),
        ModelSpec("b", "40"),
    ]
    assert next_version(specs, "a") == "13"
    assert next_version(specs, "new") == "1"


def test_register_appends_max_plus_one_at_traffic_zero(models_file, tmp_path):
    out = tmp_path / "out" / "int8"
    result = register(RegisterTarget("smollm2", models_file), out)
    assert (result.spec.version, result.spec.traffic) == ("8", 0.0)
    assert result.server_status is None
    text = models_file.read_text()
    assert text.startswith(MODELS.rstrip("\n"))  # the file's own text, comments included
    specs = read_models_file(models_file)
    assert [s.key for s in specs] == ["smollm2@1", "smollm2@7", "minilm@1", "smollm2@8"]
    new = specs[-1]
    assert (new.source, new.traffic, new.task) == (str(out.resolve()), 0.0, "generate")
    assert [s.traffic for s in specs[:2]] == [90.0, 10.0]  # the live split is untouched
    assert not [p for p in models_file.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_new_name_gets_version_one_with_all_its_traffic(models_file, tmp_path):
    result = register(RegisterTarget("student", models_file), tmp_path / "student")
    assert (result.spec.version, result.spec.traffic) == ("1", 100.0)
    assert read_models_file(models_file)[-1].key == "student@1"


def test_registering_the_same_directory_twice_is_refused(models_file, tmp_path):
    out = tmp_path / "int8"
    register(RegisterTarget("smollm2", models_file), out)
    before = models_file.read_bytes()
    with pytest.raises(ConfigError, match="already smollm2@8"):
        register(RegisterTarget("smollm2", models_file), out)
    assert models_file.read_bytes() == before


def test_add_version_refuses_an_existing_version(models_file):
    before = models_file.read_bytes()
    with pytest.raises(ConfigError, match="smollm2@7 exists already"):
        add_version(models_file, ModelSpec("smollm2", "7", source="/x", traffic=0))
    assert models_file.read_bytes() == before


def test_an_edit_that_breaks_the_file_is_not_written(models_file):
    before = models_file.read_bytes()
    # Traffic 5 would make smollm2's versions add up to 105: the server would refuse it.
    with pytest.raises(ConfigError, match="adds up to 105"):
        add_version(models_file, ModelSpec("smollm2", "9", source="/x", traffic=5))
    assert models_file.read_bytes() == before
    assert sorted(p.name for p in models_file.parent.iterdir()) == ["models.toml"]


def test_a_crash_before_the_rename_leaves_the_old_file(models_file, monkeypatch):
    before = models_file.read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        add_version(models_file, ModelSpec("smollm2", "9", source="/x", traffic=0))
    assert models_file.read_bytes() == before
    assert sorted(p.name for p in models_file.parent.iterdir()) == ["models.toml"]


def test_spec_toml_round_trips():
    spec = ModelSpec("s", "3", source='/tmp/a "b"', quantization="int8", traffic=0.0)
    import tomllib

    table = tomllib.loads(spec_toml(spec))["models"][0]
    assert ModelSpec.from_table(table, "t") == spec


def test_plan_refuses_a_name_of_another_task(models_file, tmp_path):
    with pytest.raises(ConfigError, match="serves embed"):
        plan(RegisterTarget("minilm", models_file), tmp_path / "o")


def test_plan_refuses_an_unreachable_server_before_any_work(models_file, tmp_path):
    target = RegisterTarget("smollm2", models_file, server_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="cannot reach"):
        plan(target, tmp_path / "o")


def _quantize(tmp_path: Path, *flags: str) -> list[str]:
    return ["optimize", "quantize", "--method", "int8", "-o", str(tmp_path / "o"), *flags]


def test_cli_register_without_a_models_file_fails_first(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TOKENMILL_MODELS", raising=False)
    assert main(_quantize(tmp_path, "--register", "smol")) == 2
    assert "--models-file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_register_with_a_bad_models_file_fails_first(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[models]]\nname = 'a'\ntraffic = 50\n")
    assert main(_quantize(tmp_path, "--register", "a", "--models-file", str(bad))) == 2
    assert "adds up to 50" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_server_without_register_is_refused(tmp_path, capsys):
    assert main(_quantize(tmp_path, "--server", "http://127.0.0.1:8000")) == 2
    assert "go with --register" in capsys.readouterr().err
