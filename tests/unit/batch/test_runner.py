"""The batch runner over the real pipeline and a fake engine: every line ends once."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from tests.unit.batch.factories import CHAT, chat_line, read_jsonl
from tests.unit.batch.test_store import Clock
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.batch.offloop import AsyncBatchStore
from tokenmill.batch.runner import BatchRunner
from tokenmill.batch.status import BatchStatus
from tokenmill.batch.store import BatchStore
from tokenmill.errors import ServiceUnavailableError
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.call import Caller, Usage
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.gateway.router import SingleModelRouter

FINAL = {BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED, BatchStatus.FAILED}


def pipeline_over(engine: FakeEngine) -> Pipeline:
    return Pipeline(SingleModelRouter(engine.model_name, LocalBackend(engine)))


def submit(store: BatchStore, lines: list[str], caller: Caller | None = None) -> str:
    caller = caller or Caller()
    data = ("\n".join(lines) + "\n").encode()
    file = store.add_file(caller.name, "in.jsonl", "batch", io.BytesIO(data))
    return store.create_batch(caller, CHAT, file.id, 86400, "24h", None).id


async def run_until(runner: BatchRunner, done, timeout_s: float = 10.0) -> None:
    """Runs `runner` until `done()` holds, then stops it and waits for it."""
    task = asyncio.ensure_future(runner.run())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while not await done():
            assert loop.time() < deadline, "the batch did not get there in time"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.02)
    finally:
        runner.stop()
        await asyncio.wait_for(task, 5)


def results(store: BatchStore, batch_id: str) -> list[dict]:
    batch = store.get_batch(batch_id)
    records = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is not None:
            records += read_jsonl(Path(store.get_file(file_id).path).read_text())
    return records


def finished(store: BatchStore, batch_id: str):
    async def check() -> bool:
        return store.get_batch(batch_id).status in FINAL

    return check


def test_a_batch_runs_every_line_once_at_batch_priority(tmp_path):
    store = BatchStore(tmp_path)
    engine = FakeEngine(step_delay_s=0.001)
    lines = [chat_line(f"r{i}", f"q{i}") for i in range(9)] + ['{"custom_id": "x",']
    batch_id = submit(store, lines)
    db = AsyncBatchStore(store)
    runner = BatchRunner(db, lambda: pipeline_over(engine), concurrency=3, priority=777)
    asyncio.run(run_until(runner, finished(store, batch_id)))

    batch = store.get_batch(batch_id)
    assert batch.status is BatchStatus.COMPLETED
    assert (batch.counts.total, batch.counts.completed, batch.counts.failed) == (10, 9, 1)
    records = results(store, batch_id)
    assert sorted(r["custom_id"] for r in records) == sorted([f"r{i}" for i in range(9)] + ["x"])
    assert {c.priority for c in engine.calls} == {777}
    assert len(engine.calls) == 9
    first = next(r for r in records if r["custom_id"] == "r0")
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "Hell"
    assert batch.usage.output_tokens == 9 * 4


def test_lines_in_flight_never_exceed_the_concurrency(tmp_path):
    store = BatchStore(tmp_path)
    engine = FakeEngine(step_delay_s=0.005)
    batch_id = submit(store, [chat_line(f"r{i}") for i in range(12)])
    peak = 0
    real_generate = engine.generate

    async def counting(req):
        nonlocal peak
        peak = max(peak, len(engine.running) + 1)
        async for out in real_generate(req):
            yield out

    engine.generate = counting
    runner = BatchRunner(AsyncBatchStore(store), lambda: pipeline_over(engine), 2, 1000)
    asyncio.run(run_until(runner, finished(store, batch_id)))
    assert store.get_batch(batch_id).counts.completed == 12
    assert peak == 2


def test_a_full_queue_is_retried_not_failed(tmp_path):
    store = BatchStore(tmp_path)
    engine = FakeEngine(queue_full=True)
    batch_id = submit(store, [chat_line(f"r{i}") for i in range(3)])
    runner = BatchRunner(AsyncBatchStore(store), lambda: pipeline_over(engine), 2, 1000)

    async def scenario():
        async def refused_a_while() -> bool:
            if len(engine.calls) >= 4:
                engine.queue_full = False
            return store.get_batch(batch_id).status in FINAL

        await run_until(runner, refused_a_while)

    asyncio.run(scenario())
    batch = store.get_batch(batch_id)
    assert batch.status is BatchStatus.COMPLETED and batch.counts.completed == 3
    assert all(r["response"]["status_code"] == 200 for r in results(store, batch_id))


def test_no_pipeline_yet_waits_instead_of_failing(tmp_path):
    store = BatchStore(tmp_path)
    engine = FakeEngine()
    batch_id = submit(store, [chat_line("r0")])
    attempts = 0

    def pipeline():
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ServiceUnavailableError("loading", code="model_loading")
        return pipeline_over(engine)

    runner = BatchRunner(AsyncBatchStore(store), pipeline, 1, 1000)
    asyncio.run(run_until(runner, finished(store, batch_id)))
    assert attempts == 3 and store.get_batch(batch_id).counts.completed == 1


def test_an_aborted_request_is_run_again_not_recorded(tmp_path):
    store = BatchStore(tmp_path)
    engine = FakeEngine()
    engine._closing = True  # every request ends with finish_reason "abort"
    batch_id = submit(store, [chat_line("r0")])
    runner = BatchRunner(AsyncBatchStore(store), lambda: pipeline_over(engine), 1, 1000)

    async def scenario():
        async def aborted_twice() -> bool:
            if len(engine.calls) >= 2:
                engine._closing = False
            return store.get_batch(batch_id).status in FINAL

        await run_until(runner, aborted_twice)

    asyncio.run(scenario())
    records = results(store, batch_id)
    assert len(records) == 1 and records[0]["response"]["status_code"] == 200
    assert len(engine.calls) >= 3


def test_a_restarted_runner_finishes_what_a_dead_one_left(tmp_path):
    """A crash leaves lines pending (some in flight, never recorded) and possibly a batch
    in finalizing or cancelling; a new runner on the same store ends each, once."""
    store = BatchStore(tmp_path)
    engine = FakeEngine()
    half = submit(store, [chat_line(f"h{i}") for i in range(6)])
    finalizing = submit(store, [chat_line("f0")])
    cancelling = submit(store, [chat_line(f"c{i}") for i in range(3)])
    from tokenmill.batch.input_file import read_input_file

    for batch_id in (half, finalizing, cancelling):
        batch = store.get_batch(batch_id)
        path = store.get_file(batch.input_file_id).path
        store.load_lines(batch_id, read_input_file(path, CHAT).lines, None)
    done = {"custom_id": "h1", "response": {"status_code": 200}, "error": None}
    store.record_line(half, 2, True, done, Usage())
    store.record_line(finalizing, 1, True, dict(done, custom_id="f0"), Usage())
    store.set_status(finalizing, BatchStatus.FINALIZING, outcome=BatchStatus.COMPLETED)
    store.record_line(cancelling, 1, True, dict(done, custom_id="c0"), Usage())
    store.set_status(cancelling, BatchStatus.CANCELLING)

    runner = BatchRunner(AsyncBatchStore(store), lambda: pipeline_over(engine), 2, 1000)

    async def all_final() -> bool:
        return all(store.get_batch(b).status in FINAL for b in (half, finalizing, cancelling))

    asyncio.run(run_until(runner, all_final))
    assert sorted(r["custom_id"] for r in results(store, half)) == [f"h{i}" for i in range(6)]
    assert len(engine.calls) == 5  # only the five pending lines of `half` ran
    assert store.get_batch(finalizing).status is BatchStatus.COMPLETED
    cancelled = store.get_batch(cancelling)
    assert cancelled.status is BatchStatus.CANCELLED
    codes = {r["custom_id"]: (r["error"] or {}).get("code") for r in results(store, cancelling)}
    assert codes == {"c0": None, "c1": "batch_cancelled", "c2": "batch_cancelled"}


def test_a_batch_past_its_window_expires_with_its_unrun_lines_as_errors(tmp_path):
    clock = Clock()
    store = BatchStore(tmp_path, clock=clock)
    engine = FakeEngine(step_delay_s=0.01)
    batch_id = submit(store, [chat_line(f"r{i}") for i in range(8)])
    runner = BatchRunner(
        AsyncBatchStore(store), lambda: pipeline_over(engine), 1, 1000, poll_s=0.01, clock=clock
    )

    async def expire_after_two() -> bool:
        if store.get_batch(batch_id).counts.completed >= 2:
            clock.now += 86400
        return store.get_batch(batch_id).status in FINAL

    asyncio.run(run_until(runner, expire_after_two))
    batch = store.get_batch(batch_id)
    assert batch.status is BatchStatus.EXPIRED and "expired_at" in batch.timestamps
    records = results(store, batch_id)
    assert sorted(r["custom_id"] for r in records) == [f"r{i}" for i in range(8)]
    expired = [r for r in records if r["error"] and r["error"]["code"] == "batch_expired"]
    assert len(expired) == batch.counts.failed >= 1
    assert batch.counts.completed + batch.counts.failed == 8


def test_a_missing_input_file_or_an_empty_one_fails_the_batch(tmp_path):
    store = BatchStore(tmp_path)
    empty = submit(store, [""])
    runner = BatchRunner(AsyncBatchStore(store), lambda: None, 1, 1000)
    asyncio.run(run_until(runner, finished(store, empty)))
    batch = store.get_batch(empty)
    assert batch.status is BatchStatus.FAILED and "failed_at" in batch.timestamps
    assert batch.errors[0]["code"] == "empty_file"
    assert batch.output_file_id is None and batch.error_file_id is None
