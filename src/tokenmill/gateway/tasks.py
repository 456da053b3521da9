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


@dataclass
class PreparedLabels(Prepared):
    labels: list[str] | None = None
    label_lengths: list[int] | None = None
    """Tokens of each prompt's label, at its end."""


class ZeroShotClassifier:
    """A generative model as a classifier: each (input, label) pair is a prompt ending in
    the label after an instruction; the label's log-likelihood (the engine's prompt
    logprobs, nothing generated) ranks it. All pairs are submitted at once, so they
    share engine steps. The pairs of one input share their token prefix, but the
    engine computes prompt logprobs for every position, so its prefix cache does not
    skip that prefix (measured: 0 prefix-cache hits): asking the engine for the last
    positions' logprobs only would let it."""

    def __init__(self, engine, timeout_s: float | None = None, name: str = "local"):
        self.engine = engine
        self.timeout_s = timeout_s
        self.name = name

    async def prepare(self, ctx: CallContext) -> Prepared:
        from tokenmill.gateway.prompts import chat_prompt
        from tokenmill.protocol.chat import ChatMessage

        inputs, instruction, labels = ctx.body.validated()
        tokenizer = self.engine.tokenizer
        label_ids = [tokenizer.encode(label, add_special_tokens=False) for label in labels]
        prompts, lengths = [], []
        for text in inputs:
            message = ChatMessage(role="user", content=f"{instruction}\n\nText: {text}")
            prefix = await chat_prompt(tokenizer, [message])
            for ids in label_ids:
                prompts.append(EnginePrompt(prefix.token_ids + ids))
                lengths.append(len(ids))
        params = SamplingParams(max_tokens=0, prompt_logprobs=0, temperature=0.0)
        return PreparedLabels(prompts, params, labels=labels, label_lengths=lengths)

    async def run(self, ctx: CallContext) -> CallResult:
        import math

        from tokenmill.gateway.generation import GenerationRun

        prepared = await ctx.prepared()
        run = GenerationRun(
            self.engine,
            ctx.call.request_id,
            prepared.prompts,
            prepared.params,
            prompt_param="input",
            timeout_s=self.timeout_s,
        )
        await run.start()
        async for _ in run.outputs():
            pass
        labels = prepared.labels
        scores = []
        for i, prompt in enumerate(prepared.prompts):
            n = prepared.label_lengths[i]
            positions = run.prompt_logprobs[i][-n:]
            ids = prompt.token_ids[-n:]
            scores.append(sum(pos[t].logprob for pos, t in zip(positions, ids)))
        output = []
        for start in range(0, len(scores), len(labels)):
            row = scores[start : start + len(labels)]
            top = max(row)
            exps = [math.exp(s - top) for s in row]
            total = sum(exps)
            output.append({label: e / total for label, e in zip(labels, exps)})
        infos = [PromptInfo(p.token_ids) for p in prepared.prompts]
        return CallResult(infos, [[] for _ in infos], ctx.model, output=output)


class SpacyTagger:
    """Named entities from a spaCy pipeline (en_core_web_sm), with character offsets.
    spaCy's statistical NER gives no per-entity confidence: `score` is 1.0."""

    def __init__(self, nlp, name: str = "local"):
        self.nlp = nlp
        self.name = name

    async def prepare(self, ctx: CallContext) -> Prepared:
        texts = ctx.body.validated()
        prompts = [EnginePrompt([t.i for t in self.nlp.make_doc(text)], text) for text in texts]
        return Prepared(prompts, SamplingParams(max_tokens=0))

    async def run(self, ctx: CallContext) -> CallResult:
        import asyncio

        prepared = await ctx.prepared()
        texts = [p.text for p in prepared.prompts]
        docs = await asyncio.to_thread(lambda: list(self.nlp.pipe(texts)))
        output = [
            [
                {
                    "text": e.text,
                    "label": e.label_,
                    "start": e.start_char,
                    "end": e.end_char,
                    "score": 1.0,
                }
                for e in doc.ents
            ]
            for doc in docs
        ]
        infos = [PromptInfo(p.token_ids) for p in prepared.prompts]
        return CallResult(infos, [[] for _ in infos], ctx.model, output=output)
