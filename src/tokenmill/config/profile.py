"""Profiles: named presets of setting values (`tokenmill serve --profile edge`).

A profile only changes defaults. Its values sit below every explicit source: a flag, a
TOKENMILL_ variable or a config-file key still wins (see `setting.resolve`). Names are
the settings' flat names, so a profile is checked against the declarations like any
other source of values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from tokenmill.errors import ConfigError


@dataclass(frozen=True)
class Profile:
    """A named bundle of setting values."""

    name: str
    summary: str
    """One line for --help."""
    values: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    """Flat setting name (as in the flags, with underscores) -> value, typed as the
    setting declares it."""

    def for_settings(self, known: set[str]) -> dict[str, Any]:
        """The values whose settings exist under the caller's root config (`tokenmill
        generate` has no server settings, so the edge profile's server values drop)."""
        return {k: v for k, v in self.values.items() if k in known}


DEFAULT = Profile("default", "the declared defaults")

EDGE = Profile(
    "edge",
    "the smallest footprint that stays correct: quantized weights (the GGUF's own "
    "4-bit blocks where the kernels serve them, else int8), a 64 MiB bfloat16 KV cache, "
    "2,048 tokens of context, 4 sequences, one compute thread, and no optional layers "
    "(response cache, metrics, tracing, drift, guardrails, feedback, audit log)",
    MappingProxyType(
        {
            "quantization": "auto",
            "kv_cache_memory_gib": 0.0625,
            "kv_cache_dtype": "bfloat16",
            "max_model_len": 2048,
            "max_num_seqs": 4,
            "max_num_batched_tokens": 256,
            "max_queue": 16,
            "num_threads": 1,
            "response_cache": "off",
            "metrics": False,
            "otlp_endpoint": None,
            "drift": False,
            "guard": (),
            "feedback_db": None,
            "audit_log": None,
        }
    ),
)

PROFILES = {p.name: p for p in (DEFAULT, EDGE)}


def get_profile(name: str | None, source: str = "--profile") -> Profile:
    """The profile called `name` (None: default); ConfigError naming the choices."""
    if name is None or name == "":
        return DEFAULT
    profile = PROFILES.get(name.strip().lower())
    if profile is None:
        raise ConfigError(
            f"{source}: unknown profile {name!r}; choose one of {', '.join(PROFILES)}.",
            setting="profile",
        )
    return profile
