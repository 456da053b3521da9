"""`tokenmill kafka` against a real broker (Tansu): every request answered, keyed by its
custom_id; bad messages dead-lettered with their error; kill -9 mid-stream and restart
loses nothing, with duplicates bounded by --max-in-flight; offsets all committed at the
end. Minutes (two model loads): run with `make test-kafka`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.e2e.conftest import tokenmill_command

pytestmark = pytest.mark.slow
MAX_IN_FLIGHT = 4
WAIT_S = 420


def request(custom_id: str) -> dict:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/completions",
        "body": {"prompt": f"Item {custom_id}:", "max_tokens": 10, "ignore_eos": True},
    }


class Worker:
    def __init__(self, log_path: Path, bootstrap: str, *flags: str):
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOKENMILL_")}
        self.proc = subprocess.Popen(
            [*tokenmill_command(), "kafka", "--bootstrap-servers", bootstrap, *flags],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def wait(self, timeout_s: float = 60) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self._log.close()


class TopicReader:
    """Reads whole topics from the beginning, outside any consumer group."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1):
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.messages: list = []

    def poll(self) -> None:
        for message in self.consumer.consume(100, 0.2):
            assert message.error() is None, message.error()
            self.messages.append(message)

    def values(self) -> list[dict]:
        return [json.loads(m.value()) for m in self.messages]


def test_kill_9_mid_stream_loses_nothing(bootstrap: str, tmp_path: Path):
    run = uuid.uuid4().hex[:8]  # fresh names: the test can run again on the same broker
    topics = (f"requests-{run}", f"responses-{run}", f"requests-{run}.dlq")
    group = f"workers-{run}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topics[0], num_partitions=2)]
        + [NewTopic(t, num_partitions=1) for t in topics[1:]]
    )
    for future in futures.values():
        future.result(30)
    expected = [f"r{i:02d}" for i in range(24)]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for n, custom_id in enumerate(expected):
        producer.produce(topics[0], json.dumps(request(custom_id)).encode(), partition=n % 2)
        if n == 5:
            producer.produce(topics[0], b"{not json", partition=0)
        if n == 9:
            bad = {**request("wrong-url"), "url": "/v1/embeddings"}
            producer.produce(topics[0], json.dumps(bad).encode(), partition=1)
    assert producer.flush(30) == 0
    outputs = TopicReader(bootstrap, topics[1])
    letters = TopicReader(bootstrap, topics[2])
    flags = (
        "--input-topic",
        topics[0],
        "--output-topic",
        topics[1],
        "--group-id",
        group,
        "--max-in-flight",
        str(MAX_IN_FLIGHT),
        "--max-num-seqs",
        "4",
        "--session-timeout-ms",
        "6000",
    )

    first = Worker(tmp_path / "worker1.log", bootstrap, *flags)
    deadline = time.monotonic() + WAIT_S
    while len(outputs.messages) < 4:
        assert first.proc.poll() is None, first.log()
        assert time.monotonic() < deadline, first.log()
        outputs.poll()
    first.proc.send_signal(signal.SIGKILL)
    first.wait()
    outputs.poll()
    seen_at_kill = {v["custom_id"] for v in outputs.values()}
    assert seen_at_kill < set(expected), "the first worker finished before the kill"

    second = Worker(tmp_path / "worker2.log", bootstrap, *flags)
    try:
        deadline = time.monotonic() + WAIT_S
        while {v["custom_id"] for v in outputs.values()} != set(expected) or len(
            letters.messages
        ) < 2:
            assert second.proc.poll() is None, second.log()
            assert time.monotonic() < deadline, second.log()
            outputs.poll()
            letters.poll()
    finally:
        second.proc.send_signal(signal.SIGTERM)
        code = second.wait(60)
    assert code == 0, second.log()

    outputs.poll()
    letters.poll()
    values = outputs.values()
    for message, value in zip(outputs.messages, values, strict=True):
        assert message.key().decode() == value["custom_id"]
        assert value["response"]["status_code"] == 200
        assert value["response"]["body"]["usage"]["completion_tokens"] == 10
    repeats = sum(c - 1 for c in Counter(v["custom_id"] for v in values).values())

    # A dead letter is a response like any other: one written before the kill whose offset
    # was not yet committed (an earlier message of its partition still ran) is written again
    # by the second worker. Two distinct letters, and the repeats of both kinds together stay
    # within the in-flight window (docs/kafka.md).
    dead = {json.dumps(v["input"]["value"]): v for v in letters.values()}
    assert len(dead) == 2, letters.values()
    repeats += len(letters.messages) - len(dead)
    assert repeats <= MAX_IN_FLIGHT, (Counter(v["custom_id"] for v in values), letters.values())
    garbage = next(v for v in letters.values() if v["custom_id"] is None)
    assert garbage["input"]["value"] == "{not json" and "JSON" in garbage["error"]["message"]
    wrong = next(v for v in letters.values() if v["custom_id"] == "wrong-url")
    assert "/v1/embeddings" in wrong["error"]["message"], dead
    assert all(m.key() in (None, b"wrong-url") for m in letters.messages)

    committed = Consumer({"bootstrap.servers": bootstrap, "group.id": group}).committed(
        [TopicPartition(topics[0], p) for p in (0, 1)], timeout=30
    )
    assert [tp.offset for tp in committed] == [13, 13], committed  # 12 requests + 1 bad each
