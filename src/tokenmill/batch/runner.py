"""The batch runner: takes each batch from `validating` to a final status.

One batch at a time, oldest first; up to `concurrency` of its lines in flight, each at
the batch priority, so interactive requests overtake queued batch work. Every step is
read back from the store, so a runner that starts after a crash continues where the
last one stopped: lines in flight at the crash were never recorded and run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tokenmill.batch.executor import LineInterrupted, execute_line
from tokenmill.batch.input_file import read_input_file
from tokenmill.batch.lines import RequestLine, line_error_record
from tokenmill.batch.offloop import AsyncBatchStore
from tokenmill.batch.records import BatchRecord, PendingLine
from tokenmill.batch.status import BatchStatus, InvalidTransition
from tokenmill.errors import TokenmillError
from tokenmill.gateway.call import Caller
from tokenmill.gateway.pipeline import Pipeline

logger = logging.getLogger(__name__)
PAGE = 256
MAX_BACKOFF_S = 10.0


def expired_record(custom_id: str | None) -> dict:
    return line_error_record(
        custom_id,
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    )


def cancelled_record(custom_id: str | None) -> dict:
    return line_error_record(
        custom_id, "batch_cancelled", "The batch was cancelled before this request ran."
    )


def caller_of(batch: BatchRecord) -> Caller:
    data = dict(batch.caller)
    if data.get("models") is not None:
        data["models"] = tuple(data["models"])
    return Caller(**data)


class BatchRunner:
    """Advances the store's batches; mutates only the store. `pipeline()` returns the
    pipeline to run lines through, or raises a 503 TokenmillError while there is none."""

    def __init__(
        self,
        db: AsyncBatchStore,
        pipeline: Callable[[], Pipeline],
        concurrency: int,
        priority: int,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ):
        self.db = db
        self.store = db.store
        self._pipeline = pipeline
        self.concurrency = concurrency
        self.priority = priority
        self.poll_s = poll_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """A batch was created or cancelled: look at the store now, not at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Start no new line; `run` returns once the lines in flight end."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Until `stop()`: advance the oldest active batch; wait when there is none."""
        failures = 0
        while not self._stopping:
            try:
                active = await self.db.run(self.store.active_batches)
                if not active:
                    await self._sleep(self.poll_s)
                    continue
                await self._advance(active[0])
                failures = 0
            except InvalidTransition:
                continue  # the status changed under us (a cancel): read it again
            except Exception:
                failures += 1
                logger.exception("the batch runner failed; retrying")
                await self._sleep(min(MAX_BACKOFF_S, 0.5 * 2**failures))

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _advance(self, batch: BatchRecord) -> None:
        status = batch.status
        if status is BatchStatus.VALIDATING:
            await self._validate(batch)
        elif status is BatchStatus.IN_PROGRESS:
            await self._process(batch)
        elif status is BatchStatus.CANCELLING:
            await self.db.run(self.store.close_remaining, batch.id, cancelled_record)
            await self.db.run(self.store.finish, batch.id, BatchStatus.CANCELLED)
        elif status is BatchStatus.FINALIZING:
            await self.db.run(self.store.finish, batch.id, batch.outcome or BatchStatus.COMPLETED)

    async def _validate(self, batch: BatchRecord) -> None:
        file = await self.db.run(self.store.get_file, batch.input_file_id)
        if file is None:
            error = {
                "code": "file_not_found",
                "message": f"The input file {batch.input_file_id} no longer exists.",
                "line": None,
                "param": "input_file_id",
            }
            await self.db.run(self.store.set_status, batch.id, BatchStatus.FAILED, errors=[error])
            return
        parsed = await asyncio.to_thread(read_input_file, file.path, batch.endpoint)
        if parsed.error is not None:
            await self.db.run(
                self.store.set_status, batch.id, BatchStatus.FAILED, errors=[parsed.error]
            )
            return
        await self.db.run(self.store.load_lines, batch.id, parsed.lines, parsed.model)
        logger.info("batch %s: %d requests to run", batch.id, len(parsed.lines))

    async def _process(self, batch: BatchRecord) -> None:
        """Runs the batch's pending lines; then ends it if it is done or expired."""
        caller = caller_of(batch)
        slots = asyncio.Semaphore(self.concurrency)
        in_flight: set[asyncio.Task] = set()
        last, checked = 0, 0.0
        feeding = True
        while feeding:
            page = await self.db.run(self.store.pending_lines, batch.id, last, PAGE)
            if not page:
                break
            for line in page:
                await slots.acquire()
                if time.monotonic() - checked >= self.poll_s:
                    checked = time.monotonic()
                    feeding = await self._may_feed(batch)
                if not feeding or self._stopping:
                    slots.release()
                    feeding = False
                    break
                last = line.line_no
                task = asyncio.ensure_future(self._run_line(batch, caller, line))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                task.add_done_callback(lambda _: slots.release())
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        if self._stopping:
            return
        await self._end_if_done(batch)

    async def _may_feed(self, batch: BatchRecord) -> bool:
        """False once the batch was cancelled (by any process) or its window ran out."""
        current = await self.db.run(self.store.get_batch, batch.id)
        return current.status is BatchStatus.IN_PROGRESS and self._clock() < batch.expires_at

    async def _end_if_done(self, batch: BatchRecord) -> None:
        current = await self.db.run(self.store.get_batch, batch.id)
        if current.status is not BatchStatus.IN_PROGRESS:
            return  # cancelling: the next round ends it
        if self._clock() >= batch.expires_at:
            closed = await self.db.run(self.store.close_remaining, batch.id, expired_record)
            logger.info("batch %s expired with %d requests not run", batch.id, closed)
            outcome = BatchStatus.EXPIRED
        elif await self.db.run(self.store.pending_lines, batch.id, 0, 1):
            return  # lines interrupted (a drain); the next round runs them
        else:
            outcome = BatchStatus.COMPLETED
        await self.db.run(self.store.set_status, batch.id, BatchStatus.FINALIZING, outcome=outcome)
        await self.db.run(self.store.finish, batch.id, outcome)
        logger.info("batch %s %s", batch.id, outcome.value)

    async def _run_line(self, batch: BatchRecord, caller: Caller, line: PendingLine) -> None:
        """Runs one line until it has a result to record; retries what only stopped it this
        time (queue full, rate limit, loading), with backoff. Leaves the line pending if
        the runner stops or the batch ends first."""
        request = RequestLine.from_json(line.request)
        attempt = 0
        while not self._stopping:
            try:
                result = await execute_line(self._pipeline(), request, caller, self.priority)
            except (LineInterrupted, TokenmillError) as exc:  # from pipeline(): no server yet
                attempt += 1
                retry_after = getattr(exc, "retry_after_s", None) or 0.25 * 2**attempt
                await self._sleep_unless_stopping(min(MAX_BACKOFF_S, retry_after))
                if not await self._may_feed(batch):
                    return
                continue
            await self.db.run(
                self.store.record_line,
                batch.id,
                line.line_no,
                result.ok,
                result.record,
                result.usage,
            )
            return

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(0.1, deadline - time.monotonic()))
