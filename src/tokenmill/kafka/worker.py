"""The Kafka worker: request messages in, responses out, at least once and nothing lost.

Each input message is a Batch API line (`custom_id`, `method`, `url`, `body`). It runs
through the gateway pipeline like an HTTP request, and its result line (OpenAI's batch
output shape) is produced to the output topic keyed by `custom_id`. A message that is
not a request, or whose request failed, goes to the dead-letter topic with its error.

Guarantees:
- a message's offset is committed only after its response (or dead letter) is
  acknowledged by the broker, and after every earlier message of its partition;
- the producer is idempotent (no duplicates from its own retries);
- at most `max_in_flight` messages are read and not yet committed; at that bound the
  worker pauses its partitions (backpressure) and resumes when the window drains. A
  crash therefore repeats at most that many responses, each recognisable by its
  custom_id.

confluent-kafka's consumer runs on one dedicated thread; produce calls are made from
the event loop (they never block) and a second thread serves the delivery reports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tokenmill.batch.executor import LineInterrupted, LineResult, execute_line
from tokenmill.batch.lines import MalformedLine, malformed_record, parse_line
from tokenmill.config.kafka import KafkaConfig
from tokenmill.gateway.call import Caller
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.kafka.offsets import OffsetTracker, Partition

logger = logging.getLogger(__name__)
MAX_BACKOFF_S = 5.0
POLL_S = 0.1
PRODUCE_ATTEMPTS = 5


class DeliveryError(RuntimeError):
    """The broker did not take a response after every retry; the worker stops so that
    the message is not committed (it runs again after a restart)."""


class KafkaWorker:
    """Consumes `config.input_topic` and answers every message. Mutates nothing of the
    pipeline's; owns its consumer and producer."""

    def __init__(self, config: KafkaConfig, pipeline: Pipeline, client_id: str = "tokenmill"):
        from confluent_kafka import Consumer, Producer

        self.config = config
        self.pipeline = pipeline
        common = {"bootstrap.servers": config.bootstrap_servers, "client.id": client_id}
        self.consumer = Consumer(
            {
                **common,
                "group.id": config.group_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": config.session_timeout_ms,
                "heartbeat.interval.ms": max(100, config.session_timeout_ms // 5),
            }
        )
        self.producer = Producer(
            {**common, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
        )
        self.offsets = OffsetTracker()
        self.caller = Caller(name=f"kafka:{config.group_id}")
        self._consumer_thread = ThreadPoolExecutor(1, thread_name_prefix="tokenmill-kafka")
        self._tasks: set[asyncio.Task] = set()
        self._paused = False
        self._polling = True
        self._failure: BaseException | None = None
        self.produced = 0

    async def run(self, stop: asyncio.Event, grace_s: float = 30.0) -> None:
        """Serves until `stop` is set (then finishes in-flight messages within `grace_s`)
        or a response cannot be delivered (DeliveryError)."""
        loop = asyncio.get_running_loop()
        poller = threading.Thread(target=self._poll_deliveries, name="tokenmill-kafka-dr")
        poller.start()
        await self._call(
            self.consumer.subscribe,
            [self.config.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        try:
            while not stop.is_set() and self._failure is None:
                room = self.config.max_in_flight - self.offsets.in_flight
                if room <= 0:
                    await self._commit_finished()  # a commit that failed earlier
                    room = self.config.max_in_flight - self.offsets.in_flight
                await self._apply_backpressure(room)
                messages = await self._call(self.consumer.consume, max(1, room), POLL_S)
                for message in messages:
                    self._take(loop, message)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=grace_s)
            await self._commit_finished()
        finally:
            for task in self._tasks:
                task.cancel()
            self._polling = False
            await asyncio.to_thread(poller.join)
            await asyncio.to_thread(self.producer.flush, 10)
            await self._call(self.consumer.close)
            self._consumer_thread.shutdown()
        if self._failure is not None:
            raise self._failure

    # -- consuming -----------------------------------------------------------------------

    def _take(self, loop: asyncio.AbstractEventLoop, message) -> None:
        if message.error():
            if message.error().fatal():
                self._failure = RuntimeError(f"Kafka consumer failed: {message.error()}")
            else:
                logger.warning("Kafka consumer: %s", message.error())
            return
        partition = (message.topic(), message.partition())
        self.offsets.read(partition, message.offset())
        task = loop.create_task(self._answer(message, partition))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _apply_backpressure(self, room: int) -> None:
        """Pauses every assigned partition when the window is full, resumes when it has
        room again. Paused partitions keep the consumer in its group while it waits."""
        if room <= 0 and not self._paused:
            self._paused = True
            await self._call(lambda: self.consumer.pause(self.consumer.assignment()))
            logger.debug("window full (%d in flight): paused", self.config.max_in_flight)
        elif room > 0 and self._paused:
            self._paused = False
            await self._call(lambda: self.consumer.resume(self.consumer.assignment()))

    def _on_assign(self, consumer, partitions) -> None:
        logger.info("assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))
        if self._paused:
            consumer.pause(partitions)

    def _on_revoke(self, consumer, partitions) -> None:
        """On the consumer thread, before the partitions go: commit what is finished."""
        from confluent_kafka import TopicPartition

        keys = [(p.topic, p.partition) for p in partitions]
        points = {k: v for k, v in self.offsets.commit_points().items() if k in keys}
        if points:
            try:
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in points.items()],
                    asynchronous=False,
                )
            except Exception as exc:  # noqa: BLE001 - the messages then run again elsewhere
                logger.warning("commit before a rebalance failed: %s", exc)
        self.offsets.forget(keys)
        logger.info("revoked %s", ", ".join(f"{t}[{p}]" for t, p in keys))

    # -- answering -----------------------------------------------------------------------

    async def _answer(self, message, partition: Partition) -> None:
        """Runs one message to an acknowledged response, then commits what it can."""
        raw = message.value() or b""
        try:
            line = parse_line(raw.decode("utf-8"), None, None)
        except UnicodeDecodeError as exc:
            line = MalformedLine(None, "invalid_encoding", f"The message is not UTF-8: {exc}.")
        if isinstance(line, MalformedLine):
            await self._dead_letter(message, malformed_record(line))
        else:
            result = await self._execute(line)
            if result.ok:
                await self._produce(
                    self.config.output_topic, line.custom_id, result.record, message
                )
            else:
                await self._dead_letter(message, result.record)
        point = self.offsets.done(partition, message.offset())
        if point is not None:
            await self._commit(partition, point)

    async def _execute(self, line) -> LineResult:
        attempt = 0
        while True:
            try:
                return await execute_line(self.pipeline, line, self.caller)
            except LineInterrupted as exc:
                attempt += 1
                await asyncio.sleep(min(MAX_BACKOFF_S, exc.retry_after_s or 0.1 * 2**attempt))

    async def _dead_letter(self, message, record: dict[str, Any]) -> None:
        raw = message.value() or b""
        letter = {
            **record,
            "input": {
                "topic": message.topic(),
                "partition": message.partition(),
                "offset": message.offset(),
                "value": raw.decode("utf-8", errors="replace"),
            },
        }
        await self._produce(self.config.dlq_topic, record.get("custom_id"), letter, message)

    async def _produce(self, topic: str, key: str | None, value: dict, message) -> None:
        """Produces and waits for the broker's acknowledgement; retries a failed delivery,
        then raises DeliveryError."""
        loop = asyncio.get_running_loop()
        source = f"{message.topic()}/{message.partition()}/{message.offset()}"
        payload = json.dumps(value).encode()
        error = None
        for attempt in range(PRODUCE_ATTEMPTS):
            acked: asyncio.Future = loop.create_future()

            def report(err, _msg, acked=acked) -> None:
                loop.call_soon_threadsafe(_settle, acked, err)

            try:
                self.producer.produce(
                    topic,
                    value=payload,
                    key=key.encode() if key is not None else None,
                    headers=[("tokenmill-input", source.encode())],
                    on_delivery=report,
                )
            except BufferError:  # the local queue is full: let deliveries drain it
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            error = await acked
            if error is None:
                self.produced += 1
                return
            logger.warning("delivery to %s failed (attempt %d): %s", topic, attempt + 1, error)
            await asyncio.sleep(0.2 * 2**attempt)
        raise DeliveryError(f"could not deliver to {topic} for {source}: {error}")

    def _poll_deliveries(self) -> None:
        while self._polling:
            self.producer.poll(POLL_S)

    # -- committing ----------------------------------------------------------------------

    async def _commit(self, partition: Partition, next_offset: int) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        topic, number = partition
        try:
            await self._call(
                self.consumer.commit,
                offsets=[TopicPartition(topic, number, next_offset)],
                asynchronous=False,
            )
        except KafkaException as exc:
            logger.warning("commit of %s[%d] at %d failed: %s", topic, number, next_offset, exc)
            return  # the next finished message of the partition commits again
        self.offsets.committed(partition, next_offset)

    async def _commit_finished(self) -> None:
        for partition, point in self.offsets.commit_points().items():
            await self._commit(partition, point)

    async def _call(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._consumer_thread, lambda: fn(*args, **kwargs))


def _settle(future: asyncio.Future, error) -> None:
    if not future.done():
        future.set_result(error)
