"""`tokenmill optimize ... --register NAME`: an output directory becomes a new version of
NAME in a models file (`tokenmill serve --models FILE`) and, with `--server URL`, in the
running server through its admin API, at traffic 0 so that it can be canaried.

The version is one more than the highest of NAME's numeric versions in the file and, with
a server, in the server's registry too. A name new to the file gets version 1 with all
of its traffic (a name's traffic must add up to 100). The request is checked before the
optimization starts (`plan`), so a bad file or an unreachable server costs no work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from tokenmill.errors import ConfigError
from tokenmill.gateway.models_file import ModelSpec, add_version, next_version, read_models_file

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RegisterTarget:
    """Where to register: the name, the models file and, optionally, a server."""

    name: str
    models_file: Path
    server_url: str | None = None
    """The running server's base URL (http://host:port), or None: the file only."""
    admin_key: str | None = None
    """Bearer key for the server's /admin API (not needed with --admin-open)."""


@dataclass(frozen=True)
class Registration:
    """What `register` added."""

    spec: ModelSpec
    models_file: Path
    server_status: str | None = None
    """The server's card status for the new version (`loading`, ...), None without one."""

    def to_json(self) -> dict:
        return {
            "name": self.spec.name,
            "version": self.spec.version,
            "traffic": self.spec.traffic,
            "models_file": str(self.models_file),
            "server_status": self.server_status,
        }


def plan(target: RegisterTarget, out: Path) -> ModelSpec:
    """The version `register` would add for `out`, checked against the file and the
    server now. ConfigError when the file is unreadable or invalid, when `out` is already
    a version of the name, or when the server refuses (no registry, no admin access)."""
    specs = read_models_file(target.models_file)
    source = str(Path(out).expanduser().resolve())
    for s in specs:
        if s.name == target.name and s.source and _same_path(s.source, source):
            raise ConfigError(
                f"{source} is already {s.key} in {target.models_file}; choose another -o.",
                "models",
            )
    known = [s for s in specs if s.name == target.name]
    if target.server_url:
        known += _server_versions(target)
    version = next_version(known, target.name)
    tasks = {s.task for s in known}
    if tasks and tasks != {"generate"}:
        raise ConfigError(f"{target.name!r} serves {', '.join(tasks)}, not generate.", "models")
    traffic = 0.0 if known else 100.0
    return ModelSpec(name=target.name, version=version, source=source, traffic=traffic)


def register(target: RegisterTarget, out: Path) -> Registration:
    """Adds `out` as a new version: first on the server (when given), then in the models
    file, so that a refusal by the server leaves the file as it was. Mutates the models
    file (atomically) and the server's registry."""
    spec = plan(target, out)
    status = None
    if target.server_url:
        body = {**spec.to_json(), "quantization": None}
        try:
            with _client(target) as client:
                resp = client.post("/admin/models", json=body)
        except httpx.HTTPError as exc:
            raise ConfigError(f"cannot reach {target.server_url}: {exc}", "models") from None
        if resp.status_code != 202:
            raise ConfigError(
                f"{target.server_url} refused {spec.key}: HTTP {resp.status_code} {_message(resp)}",
                "models",
            )
        status = resp.json().get("status")
    add_version(target.models_file, spec)
    return Registration(spec, target.models_file, status)


def _server_versions(target: RegisterTarget) -> list[ModelSpec]:
    try:
        with _client(target) as client:
            resp = client.get("/admin/models")
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach {target.server_url}: {exc}", "models") from None
    if resp.status_code != 200:
        raise ConfigError(
            f"{target.server_url}/admin/models answered HTTP {resp.status_code}: {_message(resp)}",
            "models",
        )
    cards = [c for c in resp.json().get("data", []) if c.get("id", "").split("@")[0] == target.name]
    return [
        ModelSpec(name=target.name, version=str(c["version"]), task=c.get("task", "generate"))
        for c in cards
        if c.get("version")
    ]


def _client(target: RegisterTarget) -> httpx.Client:
    headers = {"Authorization": f"Bearer {target.admin_key}"} if target.admin_key else {}
    base = (target.server_url or "").rstrip("/").removesuffix("/v1")
    return httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT_S)


def _message(resp: httpx.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
