"""The model registry's settings: the models file, the memory budget, admin access."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError


@dataclass(frozen=True)
class RegistryConfig:
    """Several models (and versions of one) served by one process."""

    models: str | None = setting(
        None,
        "A TOML file of served models ([[models]] tables: name, version, source, task, "
        "dtype, quantization, traffic, shadow); see docs/registry.md. Without it --model "
        "serves one model, version 1.",
        name="models",
        metavar="FILE",
    )
    memory_budget_gib: float | None = setting(
        None,
        "GiB of weights all loaded models may take together; loading past it fails with "
        "HTTP 409 naming what is loaded. Default: no budget.",
        metavar="GIB",
        none_words=("0", "none", "off"),
    )
    registry_state: str | None = setting(
        None,
        "JSON file where admin changes (new versions, traffic, promote, rollback, unload) "
        "are saved and replayed over the models file at start. Default: FILE.state.json "
        "beside the models file.",
        metavar="PATH",
    )
    admin_open: bool = setting(
        False,
        "Serve the /admin API without an admin key. Off by default: with no keys "
        "configured, /admin answers 403 (configure --api-key, or pass this on a trusted "
        "loopback host).",
    )
    shadow_sample: float = setting(
        1.0,
        "Fraction of a name's live requests also sent to its shadow version (0-1).",
        metavar="FRACTION",
    )

    def __post_init__(self) -> None:
        if self.memory_budget_gib is not None and self.memory_budget_gib <= 0:
            raise ConfigError("memory_budget_gib must be positive.", "memory_budget_gib")
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise ConfigError("shadow_sample must be in [0, 1].", "shadow_sample")
