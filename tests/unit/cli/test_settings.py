"""Settings precedence (flag > env > file > default) and the configs built from them."""

from __future__ import annotations

import json

import pytest

from tokenmill.cli.main import build_parser, main
from tokenmill.cli.settings import (
    ENGINE_OPTIONS,
    SERVER_OPTIONS,
    SettingsError,
    check_file_keys,
    engine_config,
    load_config_file,
    resolve,
    server_config,
)

OPTIONS = ENGINE_OPTIONS + SERVER_OPTIONS


def values_for(argv: list[str], env: dict | None = None, file_values: dict | None = None):
    args = build_parser().parse_args(["serve", *argv])
    return resolve(OPTIONS, args, env or {}, file_values or {})


def test_defaults_come_from_the_config_dataclasses():
    values = values_for([])
    server, engine = server_config(values), engine_config(values)
    assert (server.host, server.port, server.request_timeout_s) == ("127.0.0.1", 8000, 600.0)
    assert server.max_body_bytes == 8 * 2**20
    assert engine.model.model is None and engine.scheduler.max_waiting == 256


def test_flag_beats_env_beats_file():
    file_values = {"port": 7000, "max_num_seqs": 3, "host": "0.0.0.0"}
    env = {"TOKENMILL_PORT": "8001", "TOKENMILL_MAX_NUM_SEQS": "5"}
    values = values_for(["--port", "9000"], env, file_values)
    assert values["port"] == 9000
    assert values["max_num_seqs"] == 5
    assert values["host"] == "0.0.0.0"


def test_serve_flags_reach_the_configs():
    values = values_for(
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
        ]
    )
    engine, server = engine_config(values), server_config(values)
    assert engine.scheduler.max_waiting == 1 and engine.scheduler.max_num_seqs == 2
    assert engine.scheduler.max_num_batched_tokens == 64
    assert engine.cache.memory_gib == 0.5 and engine.cache.enable_prefix_caching is False
    assert engine.model.max_model_len == 512 and engine.model.dtype == "float32"
    assert engine.model.served_name == "m" and server.served_model_name == "m"
    assert server.request_timeout_s is None and server.max_body_bytes == 2**19


def test_bad_values_name_their_source():
    with pytest.raises(SettingsError, match=r"\$TOKENMILL_PORT.*'eighty'"):
        values_for([], {"TOKENMILL_PORT": "eighty"})
    with pytest.raises(SettingsError, match="max_num_seqs must be at least 1"):
        engine_config(values_for(["--max-num-seqs", "0"]))
    with pytest.raises(SettingsError, match="unknown config key"):
        check_file_keys({"prot": 1}, OPTIONS)


def test_config_files_toml_and_json(tmp_path):
    toml = tmp_path / "tm.toml"
    toml.write_text("port = 9100\n[engine]\nmax-num-seqs = 4\n")
    assert load_config_file(str(toml)) == {"port": 9100, "max_num_seqs": 4}
    js = tmp_path / "tm.json"
    js.write_text(json.dumps({"request_timeout": 30, "access_log": False}))
    values = values_for([], {}, load_config_file(str(js)))
    assert values["request_timeout"] == 30.0 and values["access_log"] is False
    with pytest.raises(SettingsError, match="cannot read"):
        load_config_file(str(tmp_path / "missing.toml"))


def test_main_reports_settings_errors_with_exit_2(capsys):
    assert main(["serve", "--port", "99999"], env={}) == 2
    assert "port must be in [0, 65535]" in capsys.readouterr().err


def test_main_reports_an_unknown_model_before_serving(capsys):
    assert main(["serve", "--model", "no-such-model"], env={}) == 1
    assert "Unknown model 'no-such-model'" in capsys.readouterr().err


def test_help_mentions_every_setting_and_its_env_var():
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    for opt in OPTIONS:
        assert opt.flag in text and opt.env in text
