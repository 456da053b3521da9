"""POST /v1/chat/completions and /v1/completions: HTTP in front of the gateway pipeline.

All the work (routing, policies, the model, usage) is the pipeline's; this adapter
turns the HTTP request into a Call, and the handle's result or deltas into OpenAI's
JSON or server-sent events, with the headers the policies set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from tokenmill.gateway.call import Body, Call, CallKind
from tokenmill.gateway.formats.chat import chat_chunks, chat_response
from tokenmill.gateway.formats.completion import completion_chunks, completion_response
from tokenmill.gateway.pipeline import CallHandle
from tokenmill.server.disconnect import cancel_on_disconnect
from tokenmill.server.serving.common import error_frame, ignored_fields_headers
from tokenmill.server.state import ServerState
from tokenmill.server.streaming import DONE_FRAME, SSEResponse, sse_frame

ENDPOINTS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


class GenerationService:
    """Serves both generation endpoints through the state's pipeline."""

    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, kind: CallKind, body: Body, raw: Request) -> Response:
        """Runs the call; streams if asked to. Raises TokenmillError subclasses (400,
        401, 404, 429, 503...) before any byte is sent."""
        state = self.state
        pipeline = state.pipeline
        headers = ignored_fields_headers(state.unknown_fields(ENDPOINTS[kind], body))
        call = Call.new(
            kind,
            body,
            caller=raw.scope.get("tokenmill.caller") or state.anonymous_caller,
            use_cache="no-cache" not in raw.headers.get("cache-control", "").lower(),
        )
        handle = await cancel_on_disconnect(raw, pipeline.start(call))
        headers.update(handle.headers)
        if body.stream:
            return SSEResponse(self._frames(handle), on_close=handle.close, headers=headers)
        result = await cancel_on_disconnect(raw, handle.collect())
        headers.update(handle.headers)
        tokenizer = _tokenizer(handle)
        format_response = chat_response if kind == "chat" else completion_response
        payload = format_response(call.request_id, handle.ctx.body, result, tokenizer)
        return Response(payload.model_dump_json(), media_type="application/json", headers=headers)

    async def _frames(self, handle: CallHandle) -> AsyncIterator[str]:
        ctx = handle.ctx
        body, tokenizer = ctx.body, _tokenizer(handle)

        def usage():
            return handle.result.usage

        if ctx.call.kind == "chat":
            chunks = chat_chunks(
                ctx.call.request_id, body, ctx.model, handle.deltas(), tokenizer, usage
            )
        else:
            chunks = completion_chunks(
                ctx.call.request_id,
                body,
                ctx.model,
                handle.prompts,
                handle.deltas(),
                tokenizer,
                usage,
            )
        try:
            async for chunk in chunks:
                yield sse_frame(chunk)
        except Exception as exc:  # noqa: BLE001 - headers are sent: report it in-band
            yield error_frame(exc)
        yield DONE_FRAME


def _tokenizer(handle: CallHandle):
    return getattr(handle.ctx.route.backend, "tokenizer", None)
