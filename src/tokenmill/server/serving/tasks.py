"""POST /v1/embeddings (and the other task endpoints): HTTP in front of the pipeline.

Task calls go through the same routing and policies as generation (keys, a key's
models, rate limits, audit); the route's task backend answers with `result.output`.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tokenmill.gateway.call import Call
from tokenmill.protocol.embeddings import EmbeddingRequest, build_embedding_response
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
