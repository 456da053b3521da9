"""The Files and Batches endpoints over the batch store, and the runner's place in the server.

The store is opened on first use (or at startup, if its database exists), so a server
whose clients never use the Batch API writes nothing to disk. Servers that share a state
directory share its batches; a lock file lets one of them run the batches at a time, and
when it dies the lock passes to another (the kernel drops it with the process).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path

from starlette.datastructures import UploadFile
from starlette.responses import FileResponse

from tokenmill.batch.lines import ENDPOINTS
from tokenmill.batch.offloop import AsyncBatchStore
from tokenmill.batch.records import BatchRecord, FileRecord
from tokenmill.batch.runner import BatchRunner
from tokenmill.batch.status import BatchStatus, InvalidTransition, can_cancel
from tokenmill.batch.store import BatchStore
from tokenmill.config.batch import BatchConfig
from tokenmill.errors import InvalidRequestError, TokenmillError
from tokenmill.gateway.call import Caller
from tokenmill.protocol.batch import (
    COMPLETION_WINDOWS,
    BatchCreateRequest,
    BatchError,
    BatchErrors,
    BatchList,
    BatchObject,
    BatchRequestCounts,
    BatchUsage,
    FileObject,
    InputTokensDetails,
)
from tokenmill.server.state import ServerState

logger = logging.getLogger(__name__)
LOCK_RETRY_S = 2.0
MAX_METADATA = 16


class NotFoundError(TokenmillError):
    """No such file or batch, or one the caller may not see (HTTP 404)."""

    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


def default_state_dir() -> Path:
    """A tokenmill folder in the user's data directory (XDG_DATA_HOME on Linux)."""
    import platformdirs

    return Path(platformdirs.user_data_dir("tokenmill", appauthor=False))


class BatchService:
    """Serves /v1/files and /v1/batches, and runs batches while this process holds the
    state directory's runner lock."""

    def __init__(self, config: BatchConfig, state: ServerState):
        self.config = config
        self.state = state
        self.state_dir = Path(config.state_dir).expanduser() if config.state_dir else None
        self._db: AsyncBatchStore | None = None
        self._runner: BatchRunner | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def directory(self) -> Path:
        return self.state_dir or default_state_dir()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """After the model loaded: resumes batches if the state directory has any."""
        if BatchStore.exists(self.directory):
            await self._open()

    async def stop(self, timeout_s: float) -> None:
        """Starts no new batch line; waits up to `timeout_s` for the ones in flight (the
        engine's drain ends them), then leaves what is unfinished to the next start."""
        self._stopping = True
        if self._runner is not None:
            self._runner.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout_s)
            except (TimeoutError, asyncio.CancelledError):
                pass
        if self._db is not None:
            await asyncio.to_thread(self._db.close)

    async def _open(self) -> AsyncBatchStore:
        if self._db is None:
            store = await asyncio.to_thread(BatchStore, self.directory)
            self._db = AsyncBatchStore(store)
            self._task = asyncio.ensure_future(self._run_while_locked())
        return self._db

    async def _existing(self) -> AsyncBatchStore | None:
        """The store if it exists, without creating one (reads of unknown ids)."""
        if self._db is None and not BatchStore.exists(self.directory):
            return None
        return await self._open()

    async def _run_while_locked(self) -> None:
        lock_path = self.directory / "runner.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while not self._stopping:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    await asyncio.sleep(LOCK_RETRY_S)
                    continue
                logger.info("running batches from %s", self.directory)
                self._runner = BatchRunner(
                    self._db,
                    lambda: self.state.pipeline,
                    self.config.batch_concurrency,
                    self.config.batch_priority,
                )
                if self._stopping:
                    return
                await self._runner.run()
                return
        finally:
            os.close(fd)  # releases the lock

    def _wake(self) -> None:
        if self._runner is not None:
            self._runner.wake()

    # -- files ---------------------------------------------------------------------------

    async def upload(self, caller: Caller, file: UploadFile, purpose: str) -> FileObject:
        if purpose != "batch":
            raise InvalidRequestError(
                f"purpose {purpose!r} is not served: this server stores files for the Batch "
                "API only (purpose batch).",
                param="purpose",
            )
        if file.size == 0:
            raise InvalidRequestError("The file is empty.", param="file", code="empty_file")
        db = await self._open()
        record = await db.run(
            db.store.add_file, caller.name, file.filename or "upload.jsonl", purpose, file.file
        )
        return file_object(record)

    async def get_file(self, caller: Caller, file_id: str) -> FileObject:
        return file_object(await self._file(caller, file_id))

    async def file_content(self, caller: Caller, file_id: str) -> FileResponse:
        record = await self._file(caller, file_id)
        return FileResponse(record.path, media_type="application/octet-stream")

    async def _file(self, caller: Caller, file_id: str) -> FileRecord:
        db = await self._existing()
        record = await db.run(db.store.get_file, file_id) if db else None
        if record is None or not _visible(caller, record.owner):
            raise NotFoundError(f"No such file: {file_id}.", param="file_id")
        return record

    # -- batches -------------------------------------------------------------------------

    async def create(self, caller: Caller, body: BatchCreateRequest) -> BatchObject:
        _check_create(body)
        db = await self._open()
        file = await db.run(db.store.get_file, body.input_file_id)
        if file is None or not _visible(caller, file.owner):
            raise NotFoundError(
                f"No such file: {body.input_file_id}. Upload it with POST /v1/files first.",
                param="input_file_id",
            )
        if file.purpose != "batch":
            raise InvalidRequestError(
                f"The file {file.id} has purpose {file.purpose}; a batch reads a file "
                "uploaded with purpose batch.",
                param="input_file_id",
            )
        batch = await db.run(
            db.store.create_batch,
            caller,
            body.endpoint,
            body.input_file_id,
            COMPLETION_WINDOWS[body.completion_window],
            body.completion_window,
            body.metadata,
        )
        self._wake()
        return batch_object(batch)

    async def get(self, caller: Caller, batch_id: str) -> BatchObject:
        return batch_object(await self._batch(caller, batch_id))

    async def list(self, caller: Caller, after: str | None, limit: int) -> BatchList:
        if not 1 <= limit <= 100:
            raise InvalidRequestError(
                f"limit must be between 1 and 100, got {limit}.", param="limit"
            )
        db = await self._existing()
        if db is None:
            return BatchList(data=[], has_more=False)
        owner = None if caller.admin else caller.name
        page, more = await db.run(db.store.list_batches, owner, after, limit)
        data = [batch_object(b) for b in page]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    async def cancel(self, caller: Caller, batch_id: str) -> BatchObject:
        """Moves the batch to cancelling (the runner then ends it); a batch already
        cancelling or cancelled is returned as it is."""
        batch = await self._batch(caller, batch_id)
        if batch.status in (BatchStatus.CANCELLING, BatchStatus.CANCELLED):
            return batch_object(batch)
        if not can_cancel(batch.status):
            raise InvalidTransition(batch.status, BatchStatus.CANCELLING)
        db = self._db
        batch = await db.run(db.store.set_status, batch_id, BatchStatus.CANCELLING)
        self._wake()
        return batch_object(batch)

    async def _batch(self, caller: Caller, batch_id: str) -> BatchRecord:
        db = await self._existing()
        batch = await db.run(db.store.get_batch, batch_id) if db else None
        if batch is None or not _visible(caller, batch.owner):
            raise NotFoundError(f"No such batch: {batch_id}.", param="batch_id")
        return batch


def _visible(caller: Caller, owner: str) -> bool:
    return caller.admin or caller.name == owner


def _check_create(body: BatchCreateRequest) -> None:
    if body.endpoint not in ENDPOINTS:
        raise InvalidRequestError(
            f"endpoint {body.endpoint!r} is not served by batches; use one of "
            f"{', '.join(ENDPOINTS)}.",
            param="endpoint",
        )
    if body.completion_window not in COMPLETION_WINDOWS:
        raise InvalidRequestError(
            f"completion_window must be one of {', '.join(COMPLETION_WINDOWS)}, got "
            f"{body.completion_window!r}.",
            param="completion_window",
        )
    metadata = body.metadata or {}
    if len(metadata) > MAX_METADATA:
        raise InvalidRequestError(
            f"metadata has {len(metadata)} pairs; at most {MAX_METADATA}.", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > 64 or len(value) > 512:
            raise InvalidRequestError(
                f"metadata {key[:64]!r}: keys may have 64 characters and values 512.",
                param="metadata",
            )


def file_object(record: FileRecord) -> FileObject:
    return FileObject(
        id=record.id,
        bytes=record.bytes,
        created_at=record.created_at,
        filename=record.filename,
        purpose=record.purpose,
    )


def batch_object(batch: BatchRecord) -> BatchObject:
    usage = batch.usage
    errors = None
    if batch.errors:
        errors = BatchErrors(data=[BatchError(**e) for e in batch.errors])
    return BatchObject(
        id=batch.id,
        endpoint=batch.endpoint,
        model=batch.model,
        errors=errors,
        input_file_id=batch.input_file_id,
        completion_window=batch.completion_window,
        status=batch.status.value,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        created_at=batch.created_at,
        expires_at=batch.expires_at,
        request_counts=BatchRequestCounts(
            total=batch.counts.total, completed=batch.counts.completed, failed=batch.counts.failed
        ),
        usage=BatchUsage(
            input_tokens=usage.input_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_tokens),
            output_tokens=usage.output_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens,
        ),
        metadata=batch.metadata,
        **batch.timestamps,
    )
