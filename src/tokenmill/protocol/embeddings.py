"""POST /v1/embeddings: request, response, and the pure request -> response step.

Served by a sentence encoder (all-MiniLM-L6-v2 by default). Token-id inputs are the
encoder's word-piece ids of a text, without [CLS]/[SEP]: the encoder adds them, as it
does for text. With the async EmbeddingService, a route does

    inputs = request.validated_inputs(service.dim)
    result = await service.embed(inputs, truncate=request.truncate)
    return build_embedding_response(request, result, model=name)

and `create_embedding_response` does the same in one call over a synchronous encoder.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated, Literal, Protocol

import numpy as np
from pydantic import Field

from tokenmill.errors import InvalidRequestError
from tokenmill.model.encoders import EmbeddingInput, EmbeddingResult
from tokenmill.protocol.common import OpenAIModel, ResponseModel

MAX_EMBEDDING_INPUTS = 2048
"""Inputs per request, as OpenAI allows."""

TokenId = Annotated[int, Field(strict=True, ge=0)]
EmbeddingRequestInput = str | list[str] | list[TokenId] | list[list[TokenId]]


class EmbeddingRequest(OpenAIModel):
    """OpenAI's embeddings request, plus `truncate`."""

    input: EmbeddingRequestInput = Field(
        description="A string, a list of strings, a list of token ids, or a list of token "
        f"id lists; at most {MAX_EMBEDDING_INPUTS} inputs, none empty. Token ids are the "
        "encoder's word pieces without [CLS]/[SEP]."
    )
    model: str | None = Field(None, description="Served model name; omitted means the one.")
    encoding_format: Literal["float", "base64"] = Field(
        "float",
        description='"float": lists of numbers; "base64": each vector\'s little-endian '
        "float32 bytes, base64-encoded.",
    )
    dimensions: int | None = Field(
        None, ge=1, description="Accepted only when equal to the model's dimension."
    )
    user: str | None = None
    truncate: bool = Field(
        False,
        description="tokenmill extension. An input longer than the model reads (256 word "
        "pieces for all-MiniLM-L6-v2) is refused with context_length_exceeded unless this "
        "is true, in which case only its beginning is embedded.",
    )

    def validated_inputs(self, dim: int) -> list[EmbeddingInput]:
        """The inputs as a list of texts or token-id lists. Raises InvalidRequestError
        for an empty input or list, too many inputs, or `dimensions` other than `dim`."""
        if self.dimensions is not None and self.dimensions != dim:
            raise InvalidRequestError(
                f"dimensions={self.dimensions} is not supported: this model's embeddings have "
                f"{dim} dimensions and are not shortened. Omit dimensions or pass {dim}.",
                param="dimensions",
            )
        raw = self.input
        if isinstance(raw, str) or (raw and isinstance(raw[0], int)):
            items: list[EmbeddingInput] = [raw]
        else:
            items = list(raw)
        if not items:
            raise InvalidRequestError("input must not be an empty list.", param="input")
        if len(items) > MAX_EMBEDDING_INPUTS:
            raise InvalidRequestError(
                f"input has {len(items)} items; at most {MAX_EMBEDDING_INPUTS} are allowed "
                "per request. Split it across requests.",
                param="input",
            )
        for i, item in enumerate(items):
            if len(item) == 0:
                kind = "string" if isinstance(item, str) else "token list"
                raise InvalidRequestError(f"input[{i}] is an empty {kind}.", param="input")
        return items


class EmbeddingData(ResponseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """Numbers, or base64 of little-endian float32 bytes with encoding_format=base64."""


class EmbeddingUsage(ResponseModel):
    prompt_tokens: int
    """Word pieces embedded, [CLS] and [SEP] included."""
    total_tokens: int


class EmbeddingResponse(ResponseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class Embedder(Protocol):
    """A synchronous encoder: SentenceEncoder, or a wrapper over EmbeddingService."""

    dim: int

    def embed(
        self, inputs: Sequence[EmbeddingInput], truncate: bool = False
    ) -> EmbeddingResult: ...


def encode_base64(vector: np.ndarray) -> str:
    """A vector as OpenAI's base64 format: little-endian float32 bytes."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def build_embedding_response(
    request: EmbeddingRequest, result: EmbeddingResult, model: str
) -> EmbeddingResponse:
    """The response for `request` from its embeddings; pure."""
    data = [
        EmbeddingData(
            index=i,
            embedding=encode_base64(vec)
            if request.encoding_format == "base64"
            else vec.astype(np.float32).tolist(),
        )
        for i, vec in enumerate(result.vectors)
    ]
    total = result.total_tokens
    return EmbeddingResponse(
        data=data, model=model, usage=EmbeddingUsage(prompt_tokens=total, total_tokens=total)
    )


def create_embedding_response(
    request: EmbeddingRequest, encoder: Embedder, model: str
) -> EmbeddingResponse:
    """Validates, embeds with `encoder` and builds the response. Raises
    InvalidRequestError or ContextLengthError (param "input" / "dimensions")."""
    inputs = request.validated_inputs(encoder.dim)
    result = encoder.embed(inputs, truncate=request.truncate)
    return build_embedding_response(request, result, model)
