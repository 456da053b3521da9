"""The `tokenmill kafka` subcommand: a worker that answers requests from a Kafka topic."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Mapping

from tokenmill.cli.settings import add_settings, config_from_args
from tokenmill.config.kafka import KafkaConfig, KafkaWorkerConfig
from tokenmill.errors import ConfigError

EPILOG = """\
Each input message is one request in the OpenAI Batch API's line format:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
   "body": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32}}
Its response goes to the output topic, keyed by custom_id, as a Batch API result line.
Malformed messages and failed requests go to the dead-letter topic with their error.
Delivery is at least once: a crash repeats at most --max-in-flight responses, which a
consumer recognises by their custom_id. SIGTERM or Ctrl-C finishes in-flight messages,
commits and exits 0.
"""


def add_kafka_parser(commands) -> argparse.ArgumentParser:
    """Adds `kafka` to the `tokenmill` subparsers; the parsed namespace carries `func`."""
    p = commands.add_parser(
        "kafka",
        help="Answer requests from a Kafka topic (at least once, with a dead-letter topic).",
        description="Consume request messages from a Kafka topic, run each through the model "
        "and the gateway's policies, and produce its response to another topic.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings(p, KafkaWorkerConfig)
    p.set_defaults(func=run_kafka_command)
    return p


def run_kafka_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Runs the worker until SIGTERM/SIGINT (exit 0) or a delivery failure (exit 1)."""
    config = config_from_args(KafkaWorkerConfig, args, env)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise ConfigError(
            "tokenmill kafka needs confluent-kafka: pip install 'tokenmill[kafka]'"
        ) from None
    if config.gateway.api_key or config.gateway.keys:
        raise ConfigError(
            "tokenmill kafka has no clients to authenticate: --api-key and --keys do not apply."
        )
    from tokenmill.model.registry import resolve_model

    resolve_model(config.engine.model.model)  # an unknown model fails before loading
    return asyncio.run(_serve(config))


async def _serve(config: KafkaWorkerConfig) -> int:
    from tokenmill.config import AppConfig
    from tokenmill.engine.async_engine import AsyncEngine
    from tokenmill.gateway.assemble import build_pipeline, redis_client
    from tokenmill.kafka.worker import DeliveryError, KafkaWorker

    kafka = config.kafka
    await asyncio.to_thread(ensure_topics, kafka)
    engine = await asyncio.to_thread(AsyncEngine.from_config, config.engine)
    await engine.start()
    app_config = AppConfig(engine=config.engine, gateway=config.gateway)
    pipeline = await asyncio.to_thread(
        build_pipeline, engine, app_config, redis_client(config.gateway.redis_url)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = KafkaWorker(kafka, pipeline)
    print(
        f"tokenmill kafka: serving {engine.model_name} from {kafka.input_topic} to "
        f"{kafka.output_topic} (dead letters: {kafka.dlq_topic}; group {kafka.group_id}; "
        f"at most {kafka.max_in_flight} in flight)",
        flush=True,
    )
    try:
        await worker.run(stop)
    except DeliveryError as exc:
        print(f"tokenmill kafka: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        await engine.shutdown(grace_s=0)
    print(f"tokenmill kafka: stopped after {worker.produced} responses", flush=True)
    return 0


def ensure_topics(kafka: KafkaConfig, timeout_s: float = 15.0) -> list[str]:
    """Creates whichever of the input, output and dead-letter topics is missing (one
    partition, the broker's replication); returns their names. ConfigError if the
    brokers cannot be reached."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise ConfigError(
            f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc}", setting="bootstrap_servers"
        ) from None
    wanted = [kafka.input_topic, kafka.output_topic, kafka.dlq_topic]
    missing = [t for t in dict.fromkeys(wanted) if t not in existing]
    if missing:
        futures = admin.create_topics([NewTopic(t, num_partitions=1) for t in missing])
        for topic, future in futures.items():
            try:
                future.result(timeout_s)
            except KafkaException as exc:
                if "already exists" not in str(exc).lower():
                    raise ConfigError(f"cannot create topic {topic}: {exc}") from None
        logging.getLogger(__name__).info("created topics %s", ", ".join(missing))
    return missing
