"""Task backends: models that answer a call with something other than text.

A task backend serves `Pipeline.run_task`: `prepare(ctx)` tokenizes (the rate limit
counts its tokens, with nothing to generate) and `run(ctx)` returns a CallResult whose
prompts carry the usage and whose `output` is the answer the HTTP layer formats.
"""

from __future__ import annotations

from dataclasses import dataclass

from tokenmill.gateway.call import CallResult, PromptInfo
from tokenmill.gateway.policy import CallContext, Prepared
from tokenmill.gateway.prompts import EnginePrompt
from tokenmill.model.encoders import EmbeddingResult
from tokenmill.sampling_params import SamplingParams


@dataclass
class PreparedEmbedding(Prepared):
    truncated: list[bool] | None = None


class EmbeddingBackend:
    """An EmbeddingService (sentence encoder, batched across callers) as a backend."""

    def __init__(self, service, name: str = "local"):
        self.service = service
        self.name = name

    async def prepare(self, ctx: CallContext) -> Prepared:
        """Validates and tokenizes the body's inputs; InvalidRequestError or
        ContextLengthError for bad ones. Mutates nothing."""
        body = ctx.body
        inputs = body.validated_inputs(self.service.dim)
        prepared = self.service.encoder.prepare(inputs, body.truncate)
        return PreparedEmbedding(
            [EnginePrompt(ids) for ids in prepared.token_ids],
            SamplingParams(max_tokens=0),
            truncated=prepared.truncated,
        )

    async def run(self, ctx: CallContext) -> CallResult:
        prepared = await ctx.prepared()
        token_ids = [p.token_ids for p in prepared.prompts]
        vectors = await self.service.embed_prepared(token_ids)
        result = EmbeddingResult(vectors, [len(t) for t in token_ids], prepared.truncated or [])
        return CallResult(
            [PromptInfo(ids) for ids in token_ids],
            [[] for _ in token_ids],
            ctx.model,
            output=result,
        )
