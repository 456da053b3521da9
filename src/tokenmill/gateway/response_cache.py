"""The response cache: answers to deterministic requests, served again without the model.

Only requests whose answer is determined are cached: temperature 0 (greedy) or a fixed
`seed`. The exact key covers the caller's key name (one key never receives another's
answer), the model and its version, every sampling field as resolved, the prompts as
token ids, and the fields that shape the response (echo, logprobs). The semantic mode
keys everything but the prompt the same way, and finds the prompt by embedding
similarity (all-MiniLM-L6-v2) at or above a cosine threshold.

Responses to cacheable requests carry `x-tokenmill-cache: hit` or `miss`; a request
with `Cache-Control: no-cache` is neither served from nor stored in the cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Protocol

import numpy as np

from tokenmill.gateway.cache_store import CacheStore
from tokenmill.gateway.call import GENERATION_KINDS, CallResult
from tokenmill.gateway.policy import CallContext, Policy

logger = logging.getLogger(__name__)
CACHE_HEADER = "x-tokenmill-cache"


class Embedder(Protocol):
    async def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), D) float32, each row L2-normalised; long texts truncated."""


class ResponseCachePolicy(Policy):
    """Looks calls up before the model and stores finished answers after it."""

    name = "cache"

    def __init__(
        self, store: CacheStore, embedder: Embedder | None = None, threshold: float = 0.95
    ):
        self.store = store
        self.embedder = embedder
        self.threshold = threshold
        self._pending: dict[int, tuple[str, str | None, np.ndarray | None]] = {}

    async def pre_call(self, ctx: CallContext) -> None:
        if ctx.call.kind not in GENERATION_KINDS:
            return
        prepared = await ctx.prepared()
        params = prepared.params
        if not (params.greedy or params.seed is not None):
            return  # not determined: never cached, no header
        if not ctx.call.use_cache:
            ctx.decisions[self.name] = "bypass"
            return
        key, bucket = self._keys(ctx)
        vector = None
        raw = await self.store.get(key)
        if raw is None and self.embedder is not None and len(prepared.prompts) == 1:
            vector = await self._embed(prepared.prompts[0].text or "")
            raw = await self._nearest(bucket, vector)
        if raw is not None:
            result = CallResult.from_json(json.loads(raw))
            result.model = ctx.model
            ctx.result = result
            ctx.decisions[self.name] = "hit"
            ctx.decisions["cache_kind"] = "exact" if vector is None else "semantic"
            ctx.headers[CACHE_HEADER] = "hit"
            ctx.served_by = "cache"
            return
        ctx.decisions[self.name] = "miss"
        ctx.headers[CACHE_HEADER] = "miss"
        self._pending[id(ctx)] = (key, bucket if self.embedder else None, vector)

    async def post_call(self, ctx: CallContext) -> None:
        if ctx.call.kind not in GENERATION_KINDS:
            return
        pending = self._pending.pop(id(ctx), None)
        if pending is None or ctx.result is None or ctx.error is not None:
            return
        if any(c.finish_reason not in ("stop", "length") for cs in ctx.result.choices for c in cs):
            return  # aborted or filtered: not an answer to repeat
        key, bucket, vector = pending
        if bucket is not None and vector is None:
            vector = await self._embed(ctx.result.prompts[0].text or "")
        value = json.dumps(ctx.result.to_json(), separators=(",", ":")).encode()
        await self.store.put(key, value, bucket, vector)

    def _keys(self, ctx: CallContext) -> tuple[str, str]:
        """(exact key, semantic bucket): hashes of canonical JSON."""
        prepared = ctx._prepared
        body = ctx.body
        shape = {
            "echo": getattr(body, "echo", False),
            "logprobs": body.logprobs,
            "top_logprobs": getattr(body, "top_logprobs", None),
        }
        common = {
            "v": 1,
            "kind": ctx.call.kind,
            "namespace": ctx.call.caller.name,
            "model": ctx.model,
            "version": ctx.route.version,
            "shape": shape,
            "params": dataclasses.asdict(prepared.params),
        }
        bucket = _digest(common)
        key = _digest({**common, "prompts": [p.token_ids for p in prepared.prompts]})
        return key, bucket

    async def _embed(self, text: str) -> np.ndarray:
        return (await self.embedder.embed_texts([text]))[0]

    async def _nearest(self, bucket: str, vector: np.ndarray) -> bytes | None:
        keys, matrix = await self.store.vectors(bucket)
        if not keys:
            return None
        scores = matrix @ vector
        best = int(np.argmax(scores))
        if scores[best] < self.threshold:
            return None
        return await self.store.get(keys[best])


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
