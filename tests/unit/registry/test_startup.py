"""--models at start: the engine config of the first generate model, and the saved state."""

from __future__ import annotations

import pytest

from tokenmill.cli.serve import registry_deployer
from tokenmill.config import AppConfig
from tokenmill.config.setting import build
from tokenmill.errors import ConfigError
from tokenmill.gateway.models_file import ModelSpec, write_state


def test_first_generate_model_is_the_server_engine(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text(
        '[[models]]\nname = "enc"\ntask = "embed"\n'
        '[[models]]\nname = "lm"\nversion = "7"\nquantization = "int8"\n'
    )
    deployer, engine = registry_deployer(build(AppConfig, {"models": str(models)}))
    assert [s.key for s in deployer.initial] == ["lm@7", "enc@1"]
    assert engine.model.served_model_name == "lm"
    assert engine.model.quantization == "int8"
    assert deployer.state_path == f"{models}.state.json"


def test_saved_state_wins_over_the_file(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "lm"\n')
    write_state(f"{models}.state.json", [ModelSpec("lm", "3", quantization="int8")])
    deployer, _engine = registry_deployer(build(AppConfig, {"models": str(models)}))
    assert [s.key for s in deployer.initial] == ["lm@3"]
    (tmp_path / "models.toml.state.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it"):
        registry_deployer(build(AppConfig, {"models": str(models)}))


def test_a_file_without_a_generate_model_is_refused(tmp_path):
    models = tmp_path / "models.toml"
    models.write_text('[[models]]\nname = "enc"\ntask = "embed"\n')
    with pytest.raises(ConfigError, match="generate"):
        registry_deployer(build(AppConfig, {"models": str(models)}))
