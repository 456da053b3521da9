"""A real `tokenmill serve --models FILE` (SmolLM2 float32 v1 + int8 v2 canary, MiniLM)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import tests.e2e.conftest as e2e
from tests.e2e.conftest import ServerProcess, start_server

# Three models load one after the other; on a busy 2-core box that takes minutes.
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
    )
    yield srv
    code = srv.stop()
    assert code == 0, f"server exited with {code}:\n{srv.log()}"
