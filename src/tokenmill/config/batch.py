"""The Batch API's settings (server side): where its state lives and how hard it may push."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.config.engine import EngineConfig
from tokenmill.config.gateway import GatewayConfig
from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError


@dataclass(frozen=True)
class BatchConfig:
    """Files, batches and their per-line progress, kept durable in SQLite."""

    state_dir: str | None = setting(
        None,
        "Directory of the Batch API's state (a SQLite database and the uploaded and output "
        "files); created on the first upload. Processes that share it share one queue of "
        "batches, run by one of them at a time. Default: a tokenmill folder in the user's "
        "data directory ($XDG_DATA_HOME or ~/.local/share on Linux).",
        metavar="DIR",
    )
    batch_concurrency: int = setting(
        4,
        "Batch requests in flight at once. Batch work is scheduled after interactive "
        "requests, but what is in flight shares each engine step with them: fewer keeps "
        "interactive latency low, more finishes batches sooner.",
        metavar="N",
    )
    batch_priority: int = setting(
        1000,
        "Scheduling priority of batch requests (lower runs first; interactive requests "
        "default to 0), so interactive requests overtake queued batch work.",
        metavar="N",
    )
    batch_max_file_mib: float = setting(
        200.0,
        "Largest file POST /v1/files accepts (other requests keep --max-body-mib).",
        metavar="MIB",
    )

    def __post_init__(self) -> None:
        if self.batch_concurrency < 1:
            raise ConfigError("batch_concurrency must be at least 1.", setting="batch_concurrency")
        if self.batch_max_file_mib <= 0:
            raise ConfigError("batch_max_file_mib must be positive.", setting="batch_max_file_mib")

    @property
    def max_file_bytes(self) -> int:
        return int(self.batch_max_file_mib * 2**20)


@dataclass(frozen=True)
class OfflineBatchConfig:
    """What `tokenmill batch` is configured with: the model and the gateway's policies."""

    engine: EngineConfig = field(default_factory=EngineConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
