"""POST /v1/embeddings (and the other task endpoints): HTTP in front of the pipeline.

Task calls go through the same routing and policies as generation (keys, a key's
models, rate limits, audit); the route's task backend answers with `result.output`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tokenmill.gateway.call import Call
from tokenmill.protocol.embeddings import EmbeddingRequest, build_embedding_response
from tokenmill.protocol.tasks import (
    Classification,
    ClassifyRequest,
    ClassifyResponse,
    Entity,
    NerRequest,
    NerResponse,
    NerResult,
    TaskUsage,
)
from tokenmill.server.disconnect import cancel_on_disconnect
from tokenmill.server.serving.common import ignored_fields_headers
from tokenmill.server.state import ServerState


class TaskService:
    """Serves the task endpoints through the state's pipeline."""

    def __init__(self, state: ServerState):
        self.state = state

    async def _run(self, kind: str, endpoint: str, body, raw: Request):
        state = self.state
        pipeline = state.pipeline
        headers = ignored_fields_headers(state.unknown_fields(endpoint, body))
        call = Call.new(
            kind, body, caller=raw.scope.get("tokenmill.caller") or state.anonymous_caller
        )
        ctx = await cancel_on_disconnect(raw, pipeline.run_task(call))
        headers.update(ctx.headers)
        return ctx, headers

    async def embed(self, body: EmbeddingRequest, raw: Request) -> Response:
        """Raises TokenmillError subclasses (400 bad input, 404 no such model, 429...)."""
        ctx, headers = await self._run("embed", "/v1/embeddings", body, raw)
        payload = build_embedding_response(ctx.body, ctx.result.output, model=ctx.model)
        return Response(payload.model_dump_json(), media_type="application/json", headers=headers)

    async def classify(self, body: ClassifyRequest, raw: Request) -> Response:
        """Each input's label probabilities, most probable first."""
        ctx, headers = await self._run("classify", "/v1/classify", body, raw)
        data = []
        for i, probs in enumerate(ctx.result.output):
            ranked = sorted(probs.items(), key=lambda kv: -kv[1])
            data.append(
                Classification(
                    index=i,
                    label=ranked[0][0],
                    scores=[{"label": k, "probability": v} for k, v in ranked],
                )
            )
        payload = ClassifyResponse(model=ctx.model, data=data, usage=_usage(ctx))
        return Response(payload.model_dump_json(), media_type="application/json", headers=headers)

    async def ner(self, body: NerRequest, raw: Request) -> Response:
        """Each input's entities with character offsets."""
        ctx, headers = await self._run("ner", "/v1/ner", body, raw)
        data = [
            NerResult(index=i, entities=[Entity(**e) for e in entities])
            for i, entities in enumerate(ctx.result.output)
        ]
        payload = NerResponse(model=ctx.model, data=data, usage=_usage(ctx))
        return Response(payload.model_dump_json(), media_type="application/json", headers=headers)


def _usage(ctx) -> TaskUsage:
    tokens = ctx.result.usage.prompt_tokens
    return TaskUsage(prompt_tokens=tokens, total_tokens=tokens)
