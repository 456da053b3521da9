"""POST /v1/chat/completions: messages in, a chat completion or its stream out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from tokenmill.protocol.chat import (
    ChatChoiceLogprobs,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatResponseMessage,
    ChatStreamChoice,
    DeltaMessage,
)
from tokenmill.server.serving.common import error_frame, ignored_fields_headers, usage_for
from tokenmill.server.serving.generation import GenerationRun, cancel_on_disconnect
from tokenmill.server.serving.logprobs import chat_logprobs
from tokenmill.server.serving.prompts import chat_prompt
from tokenmill.server.state import ServerState
from tokenmill.server.streaming import DONE_FRAME, SSEResponse, sse_frame


class ChatService:
    """Serves chat completions from the engine that `state` holds."""

    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, body: ChatCompletionRequest, raw: Request) -> Response:
        """Validates, renders the chat template, runs the engine; streams if asked to.

        Raises TokenmillError subclasses (400, 404, 429, 503...) before any byte is sent.
        """
        state = self.state
        state.check_model(body.model)
        engine = state.engine
        headers = ignored_fields_headers(state.unknown_fields("/v1/chat/completions", body))
        params = body.to_sampling_params(engine.sampling_defaults)
        prompt = await chat_prompt(engine.tokenizer, body.messages, body.add_generation_prompt)
        run = GenerationRun(
            engine,
            state.new_request_id("chatcmpl"),
            [prompt],
            params,
            prompt_param="messages",
            priority=body.priority,
            timeout_s=state.config.request_timeout,
        )
        created = int(time.time())
        if body.stream:
            await cancel_on_disconnect(raw, run.start())
            return SSEResponse(
                self._stream(run, body, created), on_close=run.close, headers=headers
            )
        await cancel_on_disconnect(raw, run.collect())
        return Response(
            self._response(run, body, created).model_dump_json(),
            media_type="application/json",
            headers=headers,
        )

    def _response(
        self, run: GenerationRun, body: ChatCompletionRequest, created: int
    ) -> ChatCompletionResponse:
        out = run.final[0]
        assert out is not None
        tokenizer = self.state.engine.tokenizer
        choices = []
        for completion in out.outputs:
            logprobs = None
            if body.logprobs:
                logprobs = ChatChoiceLogprobs(
                    content=chat_logprobs(
                        tokenizer,
                        completion.token_ids,
                        completion.logprobs or [None] * len(completion.token_ids),
                        body.top_logprobs or 0,
                    )
                )
            choices.append(
                ChatCompletionChoice(
                    index=completion.index,
                    message=ChatResponseMessage(content=completion.text),
                    logprobs=logprobs,
                    finish_reason=completion.finish_reason,
                    stop_reason=completion.stop_reason,
                )
            )
        return ChatCompletionResponse(
            id=run.request_id,
            created=created,
            model=self.state.model_name,
            choices=choices,
            usage=usage_for(run.final),
        )

    async def _stream(
        self, run: GenerationRun, body: ChatCompletionRequest, created: int
    ) -> AsyncIterator[str]:
        model = self.state.model_name
        tokenizer = self.state.engine.tokenizer

        def chunk(choices: list[ChatStreamChoice], **extra) -> str:
            return sse_frame(
                ChatCompletionChunk(
                    id=run.request_id, created=created, model=model, choices=choices, **extra
                )
            )

        started: set[int] = set()
        try:
            async for _, out in run.outputs():
                for delta in out.deltas:
                    if delta.index not in started:
                        started.add(delta.index)
                        first = DeltaMessage(role="assistant", content="")
                        yield chunk([ChatStreamChoice(index=delta.index, delta=first)])
                    logprobs = None
                    if body.logprobs and delta.logprobs:
                        logprobs = ChatChoiceLogprobs(
                            content=chat_logprobs(
                                tokenizer, delta.token_ids, delta.logprobs, body.top_logprobs or 0
                            )
                        )
                    if not (delta.text or delta.finish_reason or logprobs):
                        continue
                    choice = ChatStreamChoice(
                        index=delta.index,
                        delta=DeltaMessage(content=delta.text or None),
                        logprobs=logprobs,
                        finish_reason=delta.finish_reason,
                        stop_reason=delta.stop_reason,
                    )
                    yield chunk([choice])
            if body.include_usage:
                yield chunk([], usage=usage_for(run.final))
        except Exception as exc:  # noqa: BLE001 - headers are sent: report it in-band
            yield error_frame(exc)
        yield DONE_FRAME
