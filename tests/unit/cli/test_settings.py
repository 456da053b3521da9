"""Settings: declared once on the config classes, offered as flags, env and file keys."""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import pytest

from tokenmill.cli.main import build_parser, main
from tokenmill.cli.settings import config_from_args, load_config_file, settings_markdown
from tokenmill.config import AppConfig, EngineConfig
from tokenmill.config.setting import build, settings_of
from tokenmill.errors import ConfigError

SETTINGS = settings_of(AppConfig)
README = Path(__file__).parents[3] / "README.md"


def config_for(argv: list[str], env: dict | None = None, command: str = "serve"):
    args = build_parser().parse_args([command, *argv])
    root = AppConfig if command == "serve" else EngineConfig
    return config_from_args(root, args, env or {})


def test_defaults_come_from_the_config_dataclasses():
    config = config_for([])
    assert config == AppConfig()
    assert (config.server.host, config.server.port, config.server.request_timeout) == (
        "127.0.0.1",
        8000,
        600.0,
    )
    assert config.server.max_body_bytes == 8 * 2**20
    assert config.engine.model.model is None and config.engine.scheduler.max_queue == 256


def test_every_config_field_is_a_setting_with_help_and_a_unique_name():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for s in SETTINGS:
        assert s.spec.help.endswith((".", ")")), s.name
        assert s.flag == "--" + s.name.replace("_", "-")
        assert s.env == "TOKENMILL_" + s.name.upper()

    # A plain field without setting() would be unreachable from the CLI.
    declared = {s.path[-1] for s in SETTINGS}
    for section in (
        AppConfig().engine.model,
        AppConfig().engine.cache,
        AppConfig().engine.scheduler,
        AppConfig().server,
    ):
        for f in dataclasses.fields(section):
            assert f.name in declared, f"{type(section).__name__}.{f.name} is not a setting"


def test_flag_beats_env_beats_file(tmp_path):
    file = tmp_path / "tm.toml"
    file.write_text('port = 7000\nmax_num_seqs = 3\nhost = "0.0.0.0"\n')
    env = {"TOKENMILL_PORT": "8001", "TOKENMILL_MAX_NUM_SEQS": "5"}
    config = config_for(["--port", "9000", "--config", str(file)], env)
    assert config.server.port == 9000
    assert config.engine.scheduler.max_num_seqs == 5
    assert config.server.host == "0.0.0.0"


def test_serve_flags_reach_the_configs():
    config = config_for(
        [
            "--max-queue",
            "1",
            "--max-num-seqs",
            "2",
            "--max-num-batched-tokens",
            "64",
            "--kv-cache-memory-gib",
            "0.5",
            "--max-model-len",
            "512",
            "--dtype",
            "float32",
            "--served-model-name",
            "m",
            "--request-timeout",
            "0",
            "--max-body-mib",
            "0.5",
            "--enable-prefix-caching",
            "false",
            "--kv-cache-dtype",
            "bfloat16",
            "--quantization",
            "int8",
            "--strict-fields",
        ]
    )
    engine, server = config.engine, config.server
    assert engine.scheduler.max_queue == 1 and engine.scheduler.max_num_seqs == 2
    assert engine.scheduler.max_num_batched_tokens == 64
    assert engine.cache.memory_gib == 0.5 and engine.cache.enable_prefix_caching is False
    assert engine.cache.dtype == "bfloat16" and engine.model.quantization == "int8"
    assert engine.model.max_model_len == 512 and engine.model.dtype == "float32"
    assert engine.model.served_model_name == "m"
    assert server.request_timeout is None and server.max_body_bytes == 2**19
    assert server.strict_fields is True


def test_none_words_and_quantization_none():
    assert config_for(["--quantization", "none"]).engine.model.quantization is None
    assert config_for(["--max-queue", "none"]).engine.scheduler.max_queue is None
    assert config_for([], {"TOKENMILL_REQUEST_TIMEOUT": "off"}).server.request_timeout is None


def test_bad_values_name_their_source(tmp_path):
    with pytest.raises(ConfigError, match=r"\$TOKENMILL_PORT.*'eighty'"):
        config_for([], {"TOKENMILL_PORT": "eighty"})
    with pytest.raises(ConfigError, match="max_num_seqs must be at least 1"):
        config_for(["--max-num-seqs", "0"])
    with pytest.raises(ConfigError, match="--enable-prefix-caching.*true or false"):
        config_for(["--enable-prefix-caching", "maybe"])
    file = tmp_path / "bad.toml"
    file.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown config key.*prot"):
        config_for(["--config", str(file)])


def test_config_files_toml_and_json(tmp_path):
    toml = tmp_path / "tm.toml"
    toml.write_text("port = 9100\n[scheduler]\nmax-num-seqs = 4\n")
    assert load_config_file(str(toml)) == {"port": 9100, "max_num_seqs": 4}
    js = tmp_path / "tm.json"
    js.write_text(json.dumps({"request_timeout": 30, "access_log": False}))
    config = config_for(["--config", str(js)])
    assert config.server.request_timeout == 30.0 and config.server.access_log is False
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(str(tmp_path / "missing.toml"))


def test_build_is_what_the_offline_llm_uses():
    config = build(EngineConfig, {"max_num_seqs": 3, "kv_cache_dtype": "float32"})
    assert config.scheduler.max_num_seqs == 3 and config.cache.dtype == "float32"
    with pytest.raises(ConfigError, match="unknown setting"):
        build(EngineConfig, {"port": 1})  # a server setting is not the engine's


def test_main_reports_settings_errors_with_exit_2(capsys):
    assert main(["serve", "--port", "99999"], env={}) == 2
    assert "port must be in [0, 65535]" in capsys.readouterr().err


def test_main_reports_an_unknown_model_before_serving(capsys):
    port = _free_port()
    assert main(["serve", "--model", "no-such-model", "--port", str(port)], env={}) == 1
    assert "Unknown model 'no-such-model'" in capsys.readouterr().err


def test_a_missing_model_file_says_file_not_found(capsys, tmp_path):
    missing = tmp_path / "x.gguf"
    assert main(["generate", "hi", "--model", str(missing)], env={}) == 1
    assert f"No such file: {str(missing)!r} does not exist" in capsys.readouterr().err


def test_a_busy_port_is_reported_before_loading(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "no-such-model"], env={}) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "Unknown model" not in err


def test_help_and_readme_list_every_setting():
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for s in SETTINGS:
        if not s.spec.hidden:
            assert s.flag in text and s.env in text, s.name
    readme = README.read_text()
    table = readme.split("<!-- settings:begin")[1].split("\n", 1)[1].split("<!-- settings:end")[0]
    assert table.strip() == settings_markdown(), (
        "README's settings table is stale: run `python -m tokenmill.cli.settings`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
