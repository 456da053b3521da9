"""POST /v1/completions: prompts in, completions (optionally echoed and scored) out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response

from tokenmill.engine.outputs import PositionLogprobs
from tokenmill.protocol.completion import (
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from tokenmill.server.engine_client import TokenizerClient
from tokenmill.server.serving.common import error_frame, ignored_fields_headers, usage_for
from tokenmill.server.serving.generation import EnginePrompt, GenerationRun, cancel_on_disconnect
from tokenmill.server.serving.logprobs import append_completion_logprobs
from tokenmill.server.serving.prompts import completion_prompts
from tokenmill.server.state import ServerState
from tokenmill.server.streaming import DONE_FRAME, SSEResponse, sse_frame


class CompletionService:
    """Serves text completions from the engine that `state` holds.

    Choice `index` is `prompt_index * n + completion_index`, as OpenAI numbers them.
    """

    def __init__(self, state: ServerState):
        self.state = state

    async def create(self, body: CompletionRequest, raw: Request) -> Response:
        """Validates, tokenizes, runs the engine; streams if asked to.

        Raises TokenmillError subclasses (400, 404, 429, 503...) before any byte is sent.
        """
        state = self.state
        state.check_model(body.model)
        engine = state.engine
        headers = ignored_fields_headers(state.unknown_fields("/v1/completions", body))
        params = body.to_sampling_params(engine.sampling_defaults)
        prompts = await completion_prompts(engine.tokenizer, body.prompt)
        run = GenerationRun(
            engine,
            state.new_request_id("cmpl"),
            prompts,
            params,
            prompt_param="prompt",
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

    def _echo_text(self, prompt: EnginePrompt) -> str:
        if prompt.text is not None:
            return prompt.text
        return self.state.engine.tokenizer.decode(prompt.token_ids, skip_special_tokens=False)

    def _response(
        self, run: GenerationRun, body: CompletionRequest, created: int
    ) -> CompletionResponse:
        tokenizer = self.state.engine.tokenizer
        choices = []
        for p_index, (prompt, out) in enumerate(zip(run.prompts, run.final)):
            assert out is not None
            for completion in out.outputs:
                text = completion.text
                logprobs = None
                if body.logprobs is not None:
                    logprobs = CompletionLogprobs()
                    offset = 0
                    if body.echo:
                        offset = _append(
                            tokenizer, logprobs, prompt.token_ids, run.prompt_logprobs[p_index], 0
                        )
                    _append(tokenizer, logprobs, completion.token_ids, completion.logprobs, offset)
                if body.echo:
                    text = self._echo_text(prompt) + text
                choices.append(
                    CompletionChoice(
                        index=p_index * body.n + completion.index,
                        text=text,
                        logprobs=logprobs,
                        finish_reason=completion.finish_reason,
                        stop_reason=completion.stop_reason,
                    )
                )
        return CompletionResponse(
            id=run.request_id,
            created=created,
            model=self.state.model_name,
            choices=choices,
            usage=usage_for(run.final),
        )

    async def _stream(
        self, run: GenerationRun, body: CompletionRequest, created: int
    ) -> AsyncIterator[str]:
        model = self.state.model_name
        tokenizer = self.state.engine.tokenizer
        offsets: dict[int, int] = {}
        try:
            async for p_index, out in run.outputs():
                for delta in out.deltas:
                    index = p_index * body.n + delta.index
                    first = index not in offsets
                    offset = offsets.get(index, 0)
                    text = delta.text
                    logprobs = CompletionLogprobs() if body.logprobs is not None else None
                    if first and body.echo:
                        prompt = run.prompts[p_index]
                        text = self._echo_text(prompt) + text
                        if logprobs is not None:
                            offset = _append(
                                tokenizer,
                                logprobs,
                                prompt.token_ids,
                                run.prompt_logprobs[p_index],
                                offset,
                            )
                    if logprobs is not None:
                        offset = _append(
                            tokenizer, logprobs, delta.token_ids, delta.logprobs, offset
                        )
                    else:
                        offset += len(text)
                    offsets[index] = offset
                    if not (text or delta.finish_reason or (logprobs and logprobs.tokens)):
                        continue
                    choice = CompletionChoice(
                        index=index,
                        text=text,
                        logprobs=logprobs,
                        finish_reason=delta.finish_reason,
                        stop_reason=delta.stop_reason,
                    )
                    yield sse_frame(
                        CompletionChunk(
                            id=run.request_id, created=created, model=model, choices=[choice]
                        )
                    )
            if body.include_usage:
                yield sse_frame(
                    CompletionChunk(
                        id=run.request_id,
                        created=created,
                        model=model,
                        choices=[],
                        usage=usage_for(run.final),
                    )
                )
        except Exception as exc:  # noqa: BLE001 - headers are sent: report it in-band
            yield error_frame(exc)
        yield DONE_FRAME


def _append(
    tokenizer: TokenizerClient,
    out: CompletionLogprobs,
    token_ids: list[int],
    positions: list[PositionLogprobs | None] | None,
    offset: int,
) -> int:
    if positions is None:
        positions = [None] * len(token_ids)
    return append_completion_logprobs(out, tokenizer, token_ids, positions, offset)
