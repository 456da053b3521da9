"""The batch store from the event loop: each call on one dedicated thread.

SQLite commits wait for the disk (synchronous=FULL); doing that on the event loop would
add the sync's latency to every interactive request the server is streaming.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from tokenmill.batch.store import BatchStore

T = TypeVar("T")


class AsyncBatchStore:
    """Runs BatchStore methods one at a time on its own thread."""

    def __init__(self, store: BatchStore):
        self.store = store
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tokenmill-batch-db")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` (a method of `self.store`) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        """Waits for queued calls, then closes the database."""
        self._pool.shutdown(wait=True)
        self.store.close()
