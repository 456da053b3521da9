"""A real `tokenmill serve --models FILE`: SmolLM2 float32 v1, its int8 v2 canary at 10%
and an int8 shadow v4 comparing on half the live calls, Gemma 3 beside it, MiniLM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.e2e.conftest as e2e
from tests.e2e.conftest import ServerProcess, start_server

# Five models load one after the other; on a busy 2-core box that takes minutes.
e2e.READY_TIMEOUT_S = max(e2e.READY_TIMEOUT_S, 900)

MODELS_TOML = """
[[models]]
name = "smollm2"
version = "1"
task = "generate"
dtype = "float32"
traffic = 90

[[models]]
name = "smollm2"
version = "2"
task = "generate"
quantization = "int8"
traffic = 10

[[models]]
name = "smollm2"
version = "4"
task = "generate"
quantization = "int8"
shadow = true

[[models]]
name = "gemma3"
version = "1"
source = "gemma3-270m"
task = "generate"

[[models]]
name = "minilm"
version = "1"
task = "embed"
"""


@pytest.fixture(scope="session")
def models_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("registry") / "models.toml"
    path.write_text(MODELS_TOML)
    return path


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory, models_file) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory,
        "registry",
        "--models",
        str(models_file),
        "--max-num-seqs",
        "8",
        "--kv-cache-memory-gib",
        "0.25",
        "--max-model-len",
        "2048",
        "--admin-open",
        "--shadow-sample",
        "0.5",
    )
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}:\n{srv.log()}"
