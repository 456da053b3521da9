"""Configuration: one frozen dataclass per concern, composed into AppConfig.

Each user-facing field is declared with `setting()` (see `setting.py`); flags,
environment variables, config-file keys and the README table come from those
declarations. Environment variables are read by the CLI, at the edge, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.config.drift import MIN_DRIFT_WINDOW, DriftConfig
from tokenmill.config.embedding import EmbeddingConfig
from tokenmill.config.engine import (
    DTYPES,
    QUANTIZATIONS,
    CacheConfig,
    EngineConfig,
    ModelConfig,
    SchedulerConfig,
)
from tokenmill.config.gateway import GatewayConfig
from tokenmill.config.server import ServerConfig


@dataclass(frozen=True)
class AppConfig:
    """Everything `tokenmill serve` is configured with."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)


__all__ = [
    "DTYPES",
    "MIN_DRIFT_WINDOW",
    "QUANTIZATIONS",
    "AppConfig",
    "CacheConfig",
    "DriftConfig",
    "EmbeddingConfig",
    "EngineConfig",
    "GatewayConfig",
    "ModelConfig",
    "SchedulerConfig",
    "ServerConfig",
]
