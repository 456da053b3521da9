"""Fixtures: the app over a model registry of fake engines and a fake encoder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from tests.unit.server.conftest import wait_ready
from tests.unit.server.fake_engine import FakeEngine
from tokenmill.config import AppConfig
from tokenmill.config.setting import build
from tokenmill.gateway.assemble import build_registry_pipeline
from tokenmill.gateway.auth import KeyStore
from tokenmill.gateway.backend import LocalBackend
from tokenmill.gateway.deployer import Deployer
from tokenmill.gateway.models_file import ModelSpec
from tokenmill.gateway.registry import LoadedModel
from tokenmill.gateway.tasks import EmbeddingBackend
from tokenmill.model.encoders.sentence_encoder import PreparedInputs
from tokenmill.server.app import build_app


class FakeEncoder:
    """Word pieces = characters; [CLS]=1, [SEP]=2; at most 16 pieces."""

    max_length = 16

    def prepare(self, inputs, truncate=False) -> PreparedInputs:
        from tokenmill.errors import ContextLengthError

        seqs, cut = [], []
        for text in inputs:
            ids = [1, *(ord(c) for c in text), 2]
            if len(ids) > self.max_length and not truncate:
                raise ContextLengthError("input too long", param="input")
            cut.append(len(ids) > self.max_length)
            seqs.append(ids[: self.max_length])
        return PreparedInputs(seqs, cut)


class FakeEmbeddingService:
    """Embeds a sequence as [length, first id, 0, 0] (dim 4)."""

    dim = 4

    def __init__(self):
        self.encoder = FakeEncoder()
        self.passes: list[int] = []

    async def embed_prepared(self, token_ids):
        self.passes.append(len(token_ids))
        return np.array([[len(t), t[1], 0, 0] for t in token_ids], dtype=np.float32)


SCRIPTS: dict[str, str] = {}
"""NAME@VERSION -> the text its fake engine answers (default "vVERSION")."""


def fake_model(spec: ModelSpec, weight_bytes: int = 100) -> LoadedModel:
    if spec.task == "embed":
        backend = EmbeddingBackend(FakeEmbeddingService())
    elif spec.task == "ner":
        from tokenmill.gateway.model_loader import _load_tagger

        return _load_tagger(spec)  # the real spaCy pipeline: ~1 s to load
    else:
        script = SCRIPTS.get(spec.key, f"v{spec.version}")
        backend = LocalBackend(FakeEngine(script=script, model_name=spec.name))
    return LoadedModel(backend, weight_bytes, close=lambda: None)


def spec(name="lm", version="1", **kw) -> ModelSpec:
    return ModelSpec(name=name, version=version, **kw)


@contextmanager
def registry_client(
    specs: list[ModelSpec], deployer: Deployer | None = None, **settings: Any
) -> Iterator[TestClient]:
    """A ready TestClient serving `specs` (the first is the 'server engine')."""
    config = build(AppConfig, settings)
    keys = KeyStore.from_settings(config.gateway.api_key, config.gateway.keys)
    first_engine = FakeEngine(script=f"v{specs[0].version}", model_name=specs[0].name)

    async def loader(s: ModelSpec) -> LoadedModel:
        return fake_model(s)

    deployer = deployer or Deployer(loader, initial=specs)
    deployer.initial = specs
    deployer._adopt_engine = lambda engine: LoadedModel(LocalBackend(engine), 100, lambda: None)
    app = build_app(
        config.server,
        lambda: first_engine,
        pipeline_factory=lambda e: build_registry_pipeline(deployer.registry, config),
        keys=keys,
        deployer=deployer,
        admin_open=config.registry.admin_open,
    )
    with TestClient(app, base_url="http://127.0.0.1") as client:
        wait_ready(client, timeout_s=120)  # spaCy loads in seconds, more on a busy box
        client.deployer = deployer
        yield client


def chat(text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 5, **fields}
