"""Server-sent events as OpenAI streams them: `data: <json>` frames, then `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE_FRAME = "data: [DONE]\n\n"


def sse_frame(payload: BaseModel | dict[str, Any]) -> str:
    """One event carrying `payload` as compact JSON."""
    if isinstance(payload, BaseModel):
        data = payload.model_dump_json()
    else:
        data = json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


class SSEResponse(StreamingResponse):
    """A text/event-stream response that stops its producer when the client disconnects.

    Starlette's StreamingResponse only watches for disconnects under ASGI spec < 2.4;
    this one always does, so closing a stream mid-way reliably cancels the producer.
    `on_close` runs however the response ends: a disconnect can cancel the producer
    before it ever started, and then the producer's own cleanup never runs.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        frames: AsyncIterator[str],
        on_close: Callable[[], None] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(
            frames,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
            media_type=self.media_type,
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def run_then_cancel(func: Any) -> None:
                    await func()
                    group.cancel_scope.cancel()

                group.start_soon(run_then_cancel, partial(self.stream_response, send))
                await run_then_cancel(partial(self.listen_for_disconnect, receive))
        finally:
            if self._on_close is not None:
                self._on_close()
