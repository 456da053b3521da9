"""Task backends: models that answer a call with something other than text.

A task backend serves `Pipeline.run_task`: `prepare(ctx)` tokenizes (the rate limit
counts its tokens, with nothing to generate) and `run(ctx)` returns a CallResult whose
prompts carry the usage and whose `output` is the answer the HTTP layer formats.
"""

from __future__ import annotations

import weakref
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


CONTENT_FREE = ("N/A", "", "[MASK]")
"""Inputs that carry no content: the label scores they get measure the prompt's own
bias toward each label (contextual calibration, Zhao et al. 2021)."""
_priors: dict[int, tuple[weakref.ref, dict[tuple, list[float]]]] = {}
"""id(engine) -> (a reference to the engine, {(instruction, labels): each label's mean
score on the CONTENT_FREE inputs}). Keyed by identity: engines need not be hashable."""


def _engine_priors(engine) -> dict[tuple, list[float]]:
    """The priors kept for `engine`, created empty on first use; an entry is dropped
    when its engine is collected (so a reused id never sees another engine's priors)."""
    held = _priors.get(id(engine))
    if held is None or held[0]() is not engine:
        key = id(engine)
        held = (weakref.ref(engine, lambda _: _priors.pop(key, None)), {})
        _priors[key] = held
    return held[1]


@dataclass
class PreparedLabels(Prepared):
    labels: list[str] | None = None
    label_lengths: list[int] | None = None
    """Tokens of each prompt's label, at its end."""
    calibration_key: tuple | None = None
    """Set when the last len(CONTENT_FREE) rows are the content-free inputs, whose
    scores become the cached prior for this key."""
    prior: list[float] | None = None


class ZeroShotClassifier:
    """A generative model as a classifier: each (input, label) pair is a prompt ending in
    the label after an instruction; the label's log-likelihood (the engine's prompt
    logprobs, nothing generated) ranks it. All pairs are submitted at once, so they
    share engine steps. The pairs of one input share their token prefix, but the
    engine computes prompt logprobs for every position, so its prefix cache does not
    skip that prefix (measured: 0 prefix-cache hits): asking the engine for the last
    positions' logprobs only would let it.

    Scores are calibrated: a small model favours one label whatever the text (SmolLM2
    answered "positive" for all 200 sentences of benchmarks/data/sentiment.jsonl). The
    mean score of each label on content-free inputs is subtracted before the softmax;
    it is computed with an (instruction, labels) pair's first call, in the same batch,
    and kept per engine."""

    def __init__(self, engine, timeout_s: float | None = None, name: str = "local"):
        self.engine = engine
        self.timeout_s = timeout_s
        self.name = name

    async def prepare(self, ctx: CallContext) -> Prepared:
        """Tokenizes every (input, label) prompt, plus the content-free ones when this
        (instruction, labels) has no prior yet. Mutates nothing."""
        from tokenmill.gateway.prompts import chat_prompt
        from tokenmill.protocol.chat import ChatMessage

        inputs, instruction, labels = ctx.body.validated()
        key = (instruction, tuple(labels))
        prior = _engine_priors(self.engine).get(key)
        texts = inputs if prior is not None else [*inputs, *CONTENT_FREE]
        tokenizer = self.engine.tokenizer
        label_ids = [tokenizer.encode(label, add_special_tokens=False) for label in labels]
        prompts, lengths = [], []
        for text in texts:
            message = ChatMessage(role="user", content=f"{instruction}\n\nText: {text}")
            prefix = await chat_prompt(tokenizer, [message])
            for ids in label_ids:
                prompts.append(EnginePrompt(prefix.token_ids + ids))
                lengths.append(len(ids))
        params = SamplingParams(max_tokens=0, prompt_logprobs=0, temperature=0.0)
        return PreparedLabels(
            prompts,
            params,
            labels=labels,
            label_lengths=lengths,
            calibration_key=None if prior is not None else key,
            prior=prior,
        )

    async def run(self, ctx: CallContext) -> CallResult:
        """Scores every prompt; stores the prior when this call computed it."""
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
        rows = [scores[i : i + len(labels)] for i in range(0, len(scores), len(labels))]
        prior = prepared.prior
        if prepared.calibration_key is not None:
            free, rows = rows[-len(CONTENT_FREE) :], rows[: -len(CONTENT_FREE)]
            prior = [sum(col) / len(free) for col in zip(*free)]
            _engine_priors(self.engine)[prepared.calibration_key] = prior
        output = []
        for row in rows:
            row = [s - p for s, p in zip(row, prior)]
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
