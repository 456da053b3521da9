"""Ray Serve mode's settings: replicas, autoscaling, the cluster, prefix-aware routing."""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.config.setting import setting
from tokenmill.errors import ConfigError


@dataclass(frozen=True)
class RayConfig:
    """How `tokenmill serve --ray` runs the API as a Ray Serve application."""

    enabled: bool = setting(
        False,
        "Serve the same API as a Ray Serve application: one deployment per served model "
        "(with --models, one for the whole file), its replicas each running the engine and "
        "the gateway (see docs/ray.md).",
        name="ray",
    )
    replicas: int = setting(
        1, "Model replicas with --ray (fixed; see --min-replicas for autoscaling).", metavar="N"
    )
    min_replicas: int | None = setting(
        None,
        "With --ray: autoscale between this and --max-replicas replicas, on "
        "--target-ongoing-requests. Default: no autoscaling (--replicas).",
        metavar="N",
    )
    max_replicas: int | None = setting(
        None, "With --ray: the autoscaling upper bound (default: --min-replicas).", metavar="N"
    )
    target_ongoing_requests: float = setting(
        2.0,
        "With --ray autoscaling: requests in progress per replica that Serve aims for.",
        metavar="N",
    )
    ray_address: str | None = setting(
        None,
        "The Ray cluster to join (e.g. ray://HOST:10001 or HOST:6379). Default: start a "
        "local Ray head in this process and stop it on exit.",
        metavar="ADDRESS",
    )
    ray_replica_cpus: float = setting(
        1.0,
        "CPUs Ray reserves per model replica (a fraction is allowed); give --num-threads to match.",
        metavar="CPUS",
    )
    ray_prefix_chars: int = setting(
        256,
        "Prefix-aware routing key: the first this many characters of the prompt (or of the "
        "messages' text). 0 turns prefix affinity off (power of two choices only).",
        metavar="CHARS",
    )
    ray_imbalance: int = setting(
        4,
        "A prefix's previous replica is preferred unless it has this many more requests "
        "in progress than the least loaded replica.",
        metavar="N",
    )
    ray_max_retries: int = setting(
        2,
        "Times a non-streaming request is retried on another replica when its replica "
        "dies; streaming requests are not retried once output was sent.",
        metavar="N",
    )

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError("replicas must be at least 1.", setting="replicas")
        if self.min_replicas is not None and self.min_replicas < 1:
            raise ConfigError("min_replicas must be at least 1.", setting="min_replicas")
        if self.max_replicas is not None:
            low = self.min_replicas if self.min_replicas is not None else 1
            if self.max_replicas < low:
                raise ConfigError(
                    "max_replicas must be at least min_replicas.", setting="max_replicas"
                )
        if self.target_ongoing_requests <= 0:
            raise ConfigError(
                "target_ongoing_requests must be positive.", setting="target_ongoing_requests"
            )
        if self.ray_replica_cpus < 0:
            raise ConfigError("ray_replica_cpus must be >= 0.", setting="ray_replica_cpus")
        for name in ("ray_prefix_chars", "ray_imbalance", "ray_max_retries"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0.", setting=name)

    @property
    def autoscaling(self) -> bool:
        return self.min_replicas is not None or self.max_replicas is not None

    def deployment_options(self) -> dict:
        """The Serve deployment's replica count or autoscaling config."""
        if not self.autoscaling:
            return {"num_replicas": self.replicas}
        low = self.min_replicas if self.min_replicas is not None else 1
        high = self.max_replicas if self.max_replicas is not None else max(low, self.replicas)
        return {
            "autoscaling_config": {
                "min_replicas": low,
                "max_replicas": high,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        }
