"""One API request's trip through the engine: one engine request per prompt, merged.

The run owns the engine streams. It is closed in every exit path (finished, error,
timeout, client gone, server cancelling); closing an unfinished stream aborts its
engine request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from tokenmill.engine.outputs import PositionLogprobs, RequestOutput
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import RequestTimeoutError
from tokenmill.gateway.engine_client import EngineClient
from tokenmill.gateway.prompts import EnginePrompt
from tokenmill.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

# The loop holds tasks weakly; cleanup tasks outlive the request that started them.
_cleanup_tasks: set[asyncio.Task] = set()


class GenerationRun:
    """Streams of one API request, one engine request per prompt, merged as they arrive.

    `start()` waits for every prompt's first output, so that engine validation errors
    (context length, queue full) surface before any response byte is sent. `outputs()`
    then yields `(prompt_index, RequestOutput)` until every prompt has finished.
    """

    def __init__(
        self,
        engine: EngineClient,
        request_id: str,
        prompts: list[EnginePrompt],
        params: SamplingParams,
        prompt_param: str = "prompt",
        priority: int = 0,
        timeout_s: float | None = None,
        caller: str = "",
    ):
        self.request_id = request_id
        self.prompts = prompts
        self.params = params
        self.final: list[RequestOutput | None] = [None] * len(prompts)
        # The engine sends prompt logprobs once, with a prompt's first output.
        self.prompt_logprobs: list[list[PositionLogprobs | None] | None] = [None] * len(prompts)
        self._timeout_s = timeout_s
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + timeout_s if timeout_s else None
        self._streams = [
            engine.generate(
                GenerationRequest(
                    f"{request_id}-{i}",
                    params,
                    p.token_ids,
                    p.text,
                    priority,
                    prompt_param,
                    caller=caller,
                )
            )
            for i, p in enumerate(prompts)
        ]
        self._pending: dict[asyncio.Future, int] = {}
        self._buffered: list[tuple[int, RequestOutput]] = []
        self._started = False
        self._closed = False

    async def start(self) -> None:
        """Waits for each prompt's first output; re-raises the first engine error."""
        if self._started:
            return
        self._started = True
        try:
            for i in range(len(self._streams)):
                self._schedule(i)
            seen: set[int] = set()
            while len(seen) < len(self._streams) and self._pending:
                for i, out in await self._next_ready():
                    seen.add(i)
                    self._buffered.append((i, out))
        except BaseException:
            self.close()
            raise

    async def outputs(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        """Yields `(prompt_index, output)` in arrival order; closes the run at the end."""
        try:
            await self.start()
            for item in self._buffered:
                yield item
            self._buffered.clear()
            while self._pending:
                for item in await self._next_ready():
                    yield item
        finally:
            self.close()

    async def collect(self) -> list[RequestOutput]:
        """Runs every prompt to the end; returns the final output of each, in prompt order."""
        async for _ in self.outputs():
            pass
        return [out for out in self.final if out is not None]

    def close(self) -> None:
        """Aborts what is unfinished. Never blocks, so it is safe in a cancelled task."""
        if self._closed:
            return
        self._closed = True
        pending = list(self._pending)
        self._pending.clear()
        for fut in pending:
            fut.cancel()
        task = asyncio.ensure_future(self._close_streams(pending))
        _cleanup_tasks.add(task)
        task.add_done_callback(_cleanup_tasks.discard)

    async def _close_streams(self, pending: list[asyncio.Future]) -> None:
        await asyncio.gather(*pending, return_exceptions=True)
        for stream in self._streams:
            try:
                await stream.aclose()
            except Exception:
                logger.exception("closing an engine stream of %s failed", self.request_id)

    def _schedule(self, index: int) -> None:
        fut = asyncio.ensure_future(_anext(self._streams[index]))
        self._pending[fut] = index

    async def _next_ready(self) -> list[tuple[int, RequestOutput]]:
        """Waits for at least one stream to produce; schedules each one's next step."""
        timeout = None
        if self._deadline is not None:
            timeout = max(0.0, self._deadline - asyncio.get_running_loop().time())
        done, _ = await asyncio.wait(
            self._pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            raise RequestTimeoutError(self._timeout_s or 0.0)
        ready = []
        for fut in sorted(done, key=lambda f: self._pending[f]):
            index = self._pending.pop(fut)
            out = fut.result()
            if out is None:
                continue
            self.final[index] = out
            if out.prompt_logprobs is not None and self.prompt_logprobs[index] is None:
                self.prompt_logprobs[index] = out.prompt_logprobs
            ready.append((index, out))
            if not out.finished:
                self._schedule(index)
        return ready


async def _anext(stream: AsyncIterator[RequestOutput]) -> RequestOutput | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None
