"""The asyncio face of the engine: model compute on one dedicated thread.

One long-lived worker thread owns the EngineCore and runs every forward pass (native
thread pools stay bound to one caller, which llama.cpp's experience shows matters on
CPUs). The event loop talks to it through a command queue; outputs come back with
`call_soon_threadsafe`, so the loop never waits on model compute.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tokenmill.config import EngineConfig
from tokenmill.engine.core import EngineCore, EngineStats
from tokenmill.engine.outputs import RequestOutput
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import EngineDeadError, InvalidRequestError, ServiceUnavailableError
from tokenmill.sampling_params import SamplingParams

log = logging.getLogger(__name__)


@dataclass
class _Abort:
    request_id: str


class _Stop:
    pass


@dataclass(frozen=True)
class EngineHealth:
    """Whether the engine thread lives and makes progress; what /health reports."""

    alive: bool
    """The worker thread is running (False once it died, whatever killed it)."""
    busy: bool
    """Requests are in flight or commands are waiting to be applied."""
    seconds_since_progress: float
    """Since the worker last finished a step or applied its commands."""
    failure: str | None = None
    """What killed the worker, if an exception did."""

    def stalled(self, bound_s: float) -> bool:
        """Work is waiting and the worker has not moved for `bound_s` seconds."""
        return self.busy and self.seconds_since_progress > bound_s


class AsyncEngine:
    """Async API over EngineCore. Create with `from_config`, then `await start()`."""

    def __init__(self, core: EngineCore):
        self.core = core
        self.tokenizer = core.tokenizer
        self.model_name = core.model_name
        self.max_model_len = core.max_model_len
        self.inputs = core.inputs
        """The engine's admission checks, for callers that check before tokenizing."""
        self.is_ready = False
        self._commands: queue.SimpleQueue = queue.SimpleQueue()
        self._queues: dict[str, asyncio.Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._dead: BaseException | None = None
        self._heartbeat = time.monotonic()
        self.num_restarts = 0
        self._stats = core.stats()
        self.sampling_defaults = core.sampling_defaults
        self.precision = core.precision

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncEngine:
        """Load the model (blocking) and build the engine; raises ModelNotFoundError."""
        return cls(EngineCore(config))

    async def start(self, warmup: bool = True) -> None:
        """Start the worker thread and, with `warmup`, run one short request through
        the model so the first client does not pay for kernel initialisation."""
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._start_thread()
        if warmup:
            params = SamplingParams(max_tokens=2, temperature=0.0)
            warm = GenerationRequest("warmup", params, prompt_token_ids=list(range(1, 33)))
            async for _ in self.generate(warm):
                pass
        self.is_ready = True

    # -- requests ------------------------------------------------------------------------

    async def generate(self, req: GenerationRequest) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its outputs as they progress (deltas; the last one
        has `finished=True` and the whole completions). Validation errors raise at the
        first iteration. Leaving the loop early (break, aclose, cancellation) aborts the
        request."""
        request_id = req.request_id
        if self._dead is not None:
            raise EngineDeadError(f"The engine stopped after an error: {self._dead}")
        if self._closing:
            raise EngineDeadError("The server is shutting down and accepts no new requests.")
        if request_id in self._queues:
            raise InvalidRequestError(
                f"Request id {request_id!r} is already in use.", code="duplicate_request_id"
            )
        q: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = q
        self._commands.put(req)
        finished = False
        try:
            while True:
                item = await q.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._queues.pop(request_id, None)
            if not finished:
                self._commands.put(_Abort(request_id))

    async def abort(self, request_id: str) -> None:
        """Abort a request wherever it is; its stream ends with finish_reason 'abort'."""
        self._commands.put(_Abort(request_id))

    def stats(self) -> EngineStats:
        """Counters as of the end of the latest step."""
        return self._stats

    def health(self) -> EngineHealth:
        """The worker thread's liveness and progress. Reads only; safe from any thread."""
        thread = self._thread
        return EngineHealth(
            alive=thread is not None and thread.is_alive(),
            busy=bool(self._queues) or not self._commands.empty(),
            seconds_since_progress=time.monotonic() - self._heartbeat,
            failure=None if self._dead is None else repr(self._dead),
        )

    async def restart(self) -> None:
        """Replace a dead worker: fail the requests it held (503, so clients retry),
        rebuild the engine state over the same loaded model, and start a new thread."""
        err = EngineDeadError("The engine failed and was restarted; retry the request.")
        self._fail_all(err)
        self._queues.clear()
        self._commands = queue.SimpleQueue()
        self.core = await asyncio.to_thread(EngineCore, self.core.config, self.core.loaded)
        self.inputs = self.core.inputs
        self._dead = None
        self.num_restarts += 1
        self._start_thread()

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop admitting; give in-flight requests `grace_s` to finish, then end the rest
        with a 503 `shutting_down` error (a stream ends with an error event, so a client
        never reads a cut answer as complete), and stop the worker thread."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._queues and loop.time() < deadline:
            await asyncio.sleep(0.05)
        cut = ServiceUnavailableError(
            f"The server shut down before this request finished (grace period {grace_s:g} s); "
            "retry it.",
            code="shutting_down",
            retry_after_s=1.0,
        )
        for rid in list(self._queues):
            self._put(rid, cut)
            self._commands.put(_Abort(rid))
        await asyncio.sleep(0.05)
        self._commands.put(_Stop())
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10.0)

    # -- worker thread -------------------------------------------------------------------

    def _start_thread(self) -> None:
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(
            target=self._run,
            args=(self.core, self._commands),
            name="tokenmill-engine",
            daemon=True,
        )
        self._thread.start()

    def _run(self, core: EngineCore, commands: queue.SimpleQueue) -> None:
        try:
            core.run(lambda block: self._drain(core, commands, block), self._deliver)
        except BaseException as exc:  # an engine bug, or the thread killed: fail loudly
            log.exception("engine thread died")
            self._dead = exc
            err = EngineDeadError(f"The engine failed: {exc!r}")
            self._loop.call_soon_threadsafe(self._fail_all, err)

    def _drain(self, core: EngineCore, commands: queue.SimpleQueue, block: bool) -> bool:
        """Apply queued commands; False once asked to stop."""
        self._heartbeat = time.monotonic()
        while True:
            try:
                cmd = commands.get(block=block, timeout=None)
            except queue.Empty:
                return True
            block = False
            self._heartbeat = time.monotonic()
            if isinstance(cmd, _Stop):
                return False
            if isinstance(cmd, GenerationRequest):
                try:
                    core.add_request(cmd)
                except Exception as exc:  # noqa: BLE001 - any refusal goes to its caller
                    self._loop.call_soon_threadsafe(self._put, cmd.request_id, exc)
            elif isinstance(cmd, _Abort):
                self._deliver(core.abort(cmd.request_id))

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        self._heartbeat = time.monotonic()
        self._stats = self.core.stats()
        if outputs:
            self._loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            self._put(out.request_id, out)

    def _put(self, request_id: str, item) -> None:
        q = self._queues.get(request_id)
        if q is not None:
            q.put_nowait(item)

    def _fail_all(self, err: BaseException) -> None:
        for q in self._queues.values():
            q.put_nowait(err)
