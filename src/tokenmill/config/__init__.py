"""Configuration: one frozen dataclass per concern, composed into AppConfig.

Each user-facing field is declared with `setting()` (see `setting.py`); flags,
environment variables, config-file keys and the README table come from those
declarations. Environment variables are read by the CLI, at the edge, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.config.batch import BatchConfig
from tokenmill.config.drift import MIN_DRIFT_WINDOW, DriftConfig
from tokenmill.config.embedding import EmbeddingConfig
from tokenmill.config.engine import (
    DTYPES,
    QUANTIZATIONS,
    CacheConfig,
    EngineConfig,
    LimitsConfig,
    ModelConfig,
    SchedulerConfig,
    SpeculativeConfig,
)
from tokenmill.config.gateway import GatewayConfig
from tokenmill.config.observability import ObservabilityConfig
from tokenmill.config.ray import RayConfig
from tokenmill.config.registry import RegistryConfig
from tokenmill.config.server import ServerConfig


@dataclass(frozen=True)
class AppConfig:
    """Everything `tokenmill serve` is configured with."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    observability: ObservabilityConfig = field(default_factory=ObservabilityConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    ray: RayConfig = field(default_factory=RayConfig)


__all__ = [
    "DTYPES",
    "MIN_DRIFT_WINDOW",
    "QUANTIZATIONS",
    "AppConfig",
    "BatchConfig",
    "CacheConfig",
    "DriftConfig",
    "EmbeddingConfig",
    "EngineConfig",
    "GatewayConfig",
    "LimitsConfig",
    "ModelConfig",
    "ObservabilityConfig",
    "RayConfig",
    "RegistryConfig",
    "SchedulerConfig",
    "ServerConfig",
    "SpeculativeConfig",
]
