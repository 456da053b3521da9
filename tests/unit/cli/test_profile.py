"""--profile: a preset of defaults beneath flags, the environment and the config file."""

from __future__ import annotations

import pytest

from tokenmill.cli.main import build_parser, main
from tokenmill.cli.serve import build_observability
from tokenmill.cli.settings import config_from_args
from tokenmill.config import AppConfig, EngineConfig
from tokenmill.config.profile import EDGE, PROFILES
from tokenmill.config.setting import settings_of
from tokenmill.gateway.assemble import build_policies
from tokenmill.gateway.response_cache import ResponseCachePolicy


def config_for(argv: list[str], env: dict | None = None, command: str = "serve"):
    args = build_parser().parse_args([command, *argv])
    root = AppConfig if command == "serve" else EngineConfig
    return config_from_args(root, args, env or {})


def test_edge_profile_resolves_to_its_preset():
    config = config_for(["--profile", "edge"])
    model, cache, sched = config.engine.model, config.engine.cache, config.engine.scheduler
    assert (model.quantization, model.max_model_len) == ("auto", 2048)
    assert (cache.memory_gib, cache.dtype) == (0.0625, "bfloat16")
    assert (sched.max_num_seqs, sched.max_num_batched_tokens, sched.max_queue) == (4, 256, 16)
    assert config.engine.num_threads == 1
    assert config.gateway.response_cache == "off"
    assert config.observability.metrics is False
    assert config.observability.otlp_endpoint is None and config.observability.drift is False
    assert config.gateway.guard == () and config.gateway.audit_log is None
    # Everything the profile does not name keeps its declared default.
    default = AppConfig()
    assert config.server == default.server and config.registry == default.registry
    assert config.engine.cache.block_size == default.engine.cache.block_size


def test_default_profile_is_the_declared_defaults():
    assert config_for(["--profile", "default"]) == AppConfig() == config_for([])


def test_flag_env_and_file_override_the_profile(tmp_path):
    file = tmp_path / "s.toml"
    file.write_text("max_num_seqs = 8\n")
    config = config_for(
        ["--profile", "edge", "--num-threads", "2", "--config", str(file)],
        env={"TOKENMILL_RESPONSE_CACHE": "exact"},
    )
    assert config.engine.num_threads == 2
    assert config.gateway.response_cache == "exact"
    assert config.engine.scheduler.max_num_seqs == 8
    assert config.engine.model.quantization == "auto"  # not overridden: still the profile's


def test_profile_from_env_or_config_file(tmp_path):
    assert config_for([], env={"TOKENMILL_PROFILE": "edge"}).engine.num_threads == 1
    file = tmp_path / "s.toml"
    file.write_text('profile = "edge"\nport = 9001\n')
    config = config_for(["--config", str(file)])
    assert (config.engine.num_threads, config.server.port) == (1, 9001)
    # The flag wins over the environment's profile.
    assert config_for(["--profile", "default"], env={"TOKENMILL_PROFILE": "edge"}) == AppConfig()


def test_engine_commands_take_the_profile_without_server_settings():
    engine = config_for(["--profile", "edge", "Hi"], command="generate")
    assert isinstance(engine, EngineConfig)
    assert (engine.num_threads, engine.model.quantization) == (1, "auto")


def test_unknown_profile_is_a_settings_error(capsys):
    assert main(["serve", "--profile", "tiny"], env={}) == 2
    err = capsys.readouterr().err
    assert "unknown profile 'tiny'" in err and "edge" in err


def test_every_profile_value_is_a_declared_setting_of_its_type():
    settings = {s.name: s for s in settings_of(AppConfig)}
    for profile in PROFILES.values():
        for name, value in profile.values.items():
            assert name in settings, (profile.name, name)
            # A typed value survives the setting's own coercion unchanged.
            shown = ",".join(value) if isinstance(value, tuple) else value
            if value is not None:
                assert settings[name].coerce(shown, "test") == value, name


def test_edge_loads_no_optional_layer():
    config = config_for(["--profile", "edge"])
    observability, observers = build_observability(config)
    assert observability.metrics is None and observability.tracing is None
    assert observability.drift is None and observability.feedback is None
    assert observers == []
    policies = build_policies(config)
    names = {type(p).__name__ for p in policies}
    assert not any(isinstance(p, ResponseCachePolicy) for p in policies)
    assert not names & {"PiiPolicy", "InjectionPolicy", "AuditLog", "DriftPolicy"}
    # The default profile does load the response cache and metrics: the check can fail.
    default = config_for([])
    assert build_observability(default)[0].metrics is not None
    assert any(isinstance(p, ResponseCachePolicy) for p in build_policies(default))


def test_help_names_the_profiles():
    text = build_parser()._subparsers._group_actions[0].choices["serve"].format_help()
    text = " ".join(text.split())
    assert "--profile {default,edge}" in text and "one compute thread" in text
    assert EDGE.summary.split(":")[0] in text


@pytest.mark.parametrize("name", ["Edge", " edge "])
def test_profile_names_are_forgiving_of_case_and_space(name):
    assert config_for(["--profile", name]).engine.num_threads == 1
