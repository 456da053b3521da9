"""The FastAPI application: routes, lifecycle, middleware and error handlers.

Routes stay thin: each parses its body (pydantic), hands it to a service in `serving/`
and returns what the service builds. The engine shares this process and event loop;
its model compute runs on the engine's own thread, so handlers never block the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from starlette.responses import Response

from tokenmill import __version__
from tokenmill.config import BatchConfig, ServerConfig
from tokenmill.gateway.auth import KeyStore
from tokenmill.gateway.engine_client import EngineClient
from tokenmill.gateway.pipeline import Pipeline
from tokenmill.protocol.chat import ChatCompletionRequest, ChatCompletionResponse
from tokenmill.protocol.common import ErrorResponse
from tokenmill.protocol.completion import CompletionRequest, CompletionResponse
from tokenmill.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from tokenmill.protocol.misc import (
    DetokenizeRequest,
    DetokenizeResponse,
    ModelCard,
    ModelList,
    PrecisionInfo,
    StatusResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
    VersionResponse,
)
from tokenmill.protocol.tasks import ClassifyRequest, ClassifyResponse, NerRequest, NerResponse
from tokenmill.server.admin import install_admin
from tokenmill.server.auth import AuthMiddleware
from tokenmill.server.batch_routes import FILES_PATH, install_batch_routes
from tokenmill.server.disconnect import ClientDisconnected
from tokenmill.server.errors import install_error_handlers
from tokenmill.server.hosts import HostGuard
from tokenmill.server.middleware import BodySizeLimit
from tokenmill.server.observability import Observability
from tokenmill.server.observability import install as install_observability
from tokenmill.server.openapi import install_openapi
from tokenmill.server.request_id import RequestId
from tokenmill.server.serving.batches import BatchService
from tokenmill.server.serving.generation import GenerationService
from tokenmill.server.serving.models import registry_card, registry_cards
from tokenmill.server.serving.tasks import TaskService
from tokenmill.server.serving.tokenize import TokenizerService
from tokenmill.server.state import Phase, ServerState

_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid parameters, or prompt plus max_tokens beyond the context."),
        (404, "Unknown model."),
        (408, "The request ran past the server's request timeout."),
        (413, "Request body too large."),
        (429, "The waiting queue is full; retry after Retry-After seconds."),
        (503, "The model is loading or the server is shutting down."),
    ]
}
_STREAM = {200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks."}}


def build_app(
    config: ServerConfig,
    engine_factory: Callable[[], EngineClient],
    on_ready: Callable[[EngineClient, float], None] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
    pipeline_factory: Callable[[EngineClient], Pipeline] | None = None,
    keys: KeyStore | None = None,
    observability: Observability | None = None,
    batch: BatchConfig | None = None,
    deployer=None,
    admin_open: bool = False,
) -> FastAPI:
    """An app that loads its engine with `engine_factory` (on a thread, once the server
    listens) and serves it. `on_ready(engine, load_seconds)` and `on_fatal(error)`
    let the caller print the startup line or exit on a failed load. With `batch`, it
    also serves the Batch API and runs its batches once the model is ready."""
    state = ServerState(
        config,
        engine_factory,
        on_ready=on_ready,
        on_fatal=on_fatal,
        pipeline_factory=pipeline_factory,
        deployer=deployer,
    )
    batches = BatchService(batch, state) if batch is not None else None

    async def load() -> None:
        await state.load()
        if batches is not None and state.phase is Phase.READY:
            await batches.start()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.ensure_future(load())
        try:
            yield
        finally:
            if not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader  # returns once the loading thread has finished
            if batches is not None:
                await batches.stop(timeout_s=config.shutdown_grace + 5)
            await state.close()

    app = FastAPI(
        title="tokenmill",
        version=__version__,
        description="An OpenAI-compatible LLM inference server.",
        lifespan=lifespan,
        docs_url="/docs" if config.docs else None,
        redoc_url="/redoc" if config.docs else None,
    )
    app.state.tokenmill = state
    upload_limit = {FILES_PATH: batch.max_file_bytes} if batch is not None else {}
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, path_limits=upload_limit)
    if keys is not None and keys.enabled:
        app.add_middleware(AuthMiddleware, keys=keys)
    if observability is not None:
        install_observability(app, state, observability)
    if config.cors_origins:  # outside auth: a browser's preflight carries no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key"],
            expose_headers=["retry-after", "x-tokenmill-ignored-fields"],
        )
    app.add_middleware(HostGuard, patterns=config.host_patterns)
    app.add_middleware(RequestId)  # outermost: the id covers every line of the request
    install_error_handlers(app)
    install_openapi(app, state)
    install_admin(app, state, admin_open)

    @app.exception_handler(ClientDisconnected)
    async def _client_gone(_: Request, __: ClientDisconnected) -> Response:
        return Response(status_code=499)

    if batches is not None:
        install_batch_routes(app, batches)
    generation = GenerationService(state)
    tokenizer = TokenizerService(state)
    tasks = TaskService(state)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses={**_STREAM, **_ERRORS},
        tags=["openai"],
    )
    async def create_chat_completion(body: ChatCompletionRequest, raw: Request) -> Response:
        """Chat completion; with `stream: true`, server-sent `chat.completion.chunk` events."""
        return await generation.create("chat", body, raw)

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses={**_STREAM, **_ERRORS},
        tags=["openai"],
    )
    async def create_completion(body: CompletionRequest, raw: Request) -> Response:
        """Text completion; `echo` with `logprobs` scores the prompt (lm-eval)."""
        return await generation.create("completion", body, raw)

    @app.post(
        "/v1/embeddings", response_model=EmbeddingResponse, responses=_ERRORS, tags=["openai"]
    )
    async def create_embedding(body: EmbeddingRequest, raw: Request) -> Response:
        """Sentence embeddings from a registered `task = "embed"` model (--models)."""
        return await tasks.embed(body, raw)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=_ERRORS, tags=["tasks"])
    async def classify(body: ClassifyRequest, raw: Request) -> Response:
        """Label probabilities per input: zero-shot on a generative model (each label's
        likelihood after an instruction), or a registered classify model."""
        return await tasks.classify(body, raw)

    @app.post("/v1/ner", response_model=NerResponse, responses=_ERRORS, tags=["tasks"])
    async def ner(body: NerRequest, raw: Request) -> Response:
        """Named entities with character offsets, from a registered `task = "ner"` model."""
        return await tasks.ner(body, raw)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["openai"])
    async def list_models() -> ModelList:
        """Every served name and NAME@VERSION (one card without --models)."""
        if state.deployer is not None:
            state.engine  # noqa: B018 - 503 while loading
            return ModelList(data=registry_cards(state.deployer.registry))
        return ModelList(data=[_model_card(state)])

    @app.get(
        "/v1/models/{model_id:path}", response_model=ModelCard, responses=_ERRORS, tags=["openai"]
    )
    async def get_model(model_id: str) -> ModelCard:
        """A served name's or NAME@VERSION's card; 404 for any other."""
        if state.deployer is not None:
            state.engine  # noqa: B018 - 503 while loading
            return registry_card(state.deployer.registry, model_id)
        state.check_model(model_id)
        return _model_card(state)

    @app.post("/tokenize", response_model=TokenizeResponse, responses=_ERRORS, tags=["tokenizer"])
    async def tokenize(body: TokenizeRequest, response: Response) -> TokenizeResponse:
        """Token ids of a prompt, or of chat messages after the template."""
        return await tokenizer.tokenize(body, response)

    @app.post(
        "/detokenize", response_model=DetokenizeResponse, responses=_ERRORS, tags=["tokenizer"]
    )
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        """Text of token ids."""
        return tokenizer.detokenize(body)

    @app.get(
        "/tokenizer_info",
        response_model=TokenizerInfoResponse,
        responses=_ERRORS,
        tags=["tokenizer"],
    )
    async def tokenizer_info() -> TokenizerInfoResponse:
        """Special tokens and the chat template."""
        return tokenizer.info()

    @app.get("/health", response_model=StatusResponse, tags=["operations"])
    async def health() -> Response:
        """Liveness: 503 if the model failed to load, the engine thread is dead or
        restarting, or work waits and the engine has not stepped within
        --engine-stall-timeout; else 200 (loading and draining included)."""
        healthy, status = state.health()
        return JSONResponse({"status": status}, status_code=200 if healthy else 503)

    @app.get("/ready", response_model=StatusResponse, tags=["operations"])
    async def ready() -> Response:
        """Readiness: 200 once the model is loaded and warm and the engine healthy; 503
        while loading, draining or restarting, or when /health fails."""
        engine = state.loaded_engine
        healthy, status = state.health()
        if state.phase is Phase.READY and engine is not None and engine.is_ready and healthy:
            return JSONResponse({"status": "ready"})
        if healthy:
            status = state.phase.value if state.phase is not Phase.READY else "not_ready"
        return JSONResponse({"status": status}, status_code=503)

    @app.get("/version", response_model=VersionResponse, tags=["operations"])
    async def version() -> VersionResponse:
        """The tokenmill version, and the served model's precision once it is loaded."""
        engine = state.loaded_engine
        if engine is None:
            return VersionResponse(version=__version__)
        return VersionResponse(
            version=__version__, model=engine.model_name, precision=_precision(engine)
        )

    @app.get("/v1/engine/stats", responses=_ERRORS, tags=["operations"])
    async def engine_stats() -> dict[str, Any]:
        """The engine's counters: running and waiting requests, KV blocks, prefix cache."""
        engine = state.loaded_engine or state.engine
        stats = engine.stats()
        return dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else dict(vars(stats))

    return app


def _precision(engine: EngineClient) -> PrecisionInfo | None:
    precision = getattr(engine, "precision", None)
    return PrecisionInfo(**dataclasses.asdict(precision)) if precision is not None else None


def _model_card(state: ServerState) -> ModelCard:
    engine = state.engine
    return ModelCard(
        id=state.model_name,
        created=state.created,
        max_model_len=engine.max_model_len,
        precision=_precision(engine),
    )
