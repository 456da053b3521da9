"""The Kafka worker's settings: which broker and topics, and how much work it holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.config.engine import EngineConfig
from tokenmill.config.gateway import GatewayConfig
from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError

_REQUIRED = ("bootstrap_servers", "input_topic", "output_topic", "group_id")


@dataclass(frozen=True)
class KafkaConfig:
    """Where `tokenmill kafka` reads requests and writes responses."""

    bootstrap_servers: str | None = setting(
        None, "Kafka brokers to connect to, HOST:PORT[,HOST:PORT...] (required).", metavar="HOSTS"
    )
    input_topic: str | None = setting(
        None,
        "Topic of request messages, in the Batch API's line format (required).",
        metavar="TOPIC",
    )
    output_topic: str | None = setting(
        None, "Topic the responses go to, keyed by custom_id (required).", metavar="TOPIC"
    )
    group_id: str | None = setting(
        None,
        "Consumer group; workers in one group share the input topic's partitions (required).",
        metavar="GROUP",
    )
    dead_letter_topic: str | None = setting(
        None,
        "Topic of messages that are malformed or whose request failed, each with its error. "
        "Default: the input topic's name followed by .dlq.",
        metavar="TOPIC",
    )
    max_in_flight: int = setting(
        32,
        "Messages read but not yet committed (in progress, or done behind an earlier one); "
        "at this many the worker pauses its partitions. Also the bound on duplicates after "
        "a crash.",
        metavar="N",
    )
    session_timeout_ms: int = setting(
        10_000,
        "Kafka consumer session timeout: how soon the group notices a dead worker and hands "
        "its partitions to another.",
        metavar="MS",
    )

    def __post_init__(self) -> None:
        for name in _REQUIRED:
            if not getattr(self, name):
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} is required.", setting=name)
        if self.max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1.", setting="max_in_flight")
        if self.session_timeout_ms < 1000:
            raise ConfigError(
                "session_timeout_ms must be at least 1000.", setting="session_timeout_ms"
            )
        if self.dlq_topic in (self.input_topic, self.output_topic):
            raise ConfigError(
                "dead_letter_topic must differ from the input and output topics.",
                setting="dead_letter_topic",
            )

    @property
    def dlq_topic(self) -> str:
        return self.dead_letter_topic or f"{self.input_topic}.dlq"


@dataclass(frozen=True)
class KafkaWorkerConfig:
    """Everything `tokenmill kafka` is configured with: the model, the gateway's
    policies, and the broker."""

    kafka: KafkaConfig
    engine: EngineConfig = field(default_factory=EngineConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
