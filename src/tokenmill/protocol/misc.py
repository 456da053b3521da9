"""Models of the non-generation endpoints: models, tokenizer, health and stats."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field

from tokenmill.protocol.chat import ChatMessage
from tokenmill.protocol.common import OpenAIModel, ResponseModel


class PrecisionInfo(ResponseModel):
    """What the precision settings resolved to on this machine."""

    dtype: str
    quantization: str | None = None
    kv_cache_dtype: str
    kernels: str


class ModelCard(ResponseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tokenmill"
    max_model_len: int | None = None
    precision: PrecisionInfo | None = None
    task: str | None = None
    """Under --models: generate, embed, classify or ner."""
    version: str | None = None
    """The version a NAME@VERSION card describes; a NAME card lists them in `versions`."""
    versions: list[str] | None = None
    status: str | None = None
    """loading, ready, draining or failed."""
    traffic: float | None = None
    """Percent of NAME's requests this version answers."""
    shadow: bool | None = None
    shadow_compare: dict[str, Any] | None = None
    """How a shadow version's answers compared with the live ones."""
    error: str | None = None


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(OpenAIModel):
    """Exactly one of `prompt` (text) or `messages` (rendered with the chat template
    first); the schema says so with oneOf."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["prompt"]}, {"required": ["messages"]}]}
    )

    model: str | None = None
    prompt: str = Field(None, description="Text to tokenize.")  # type: ignore[assignment]
    messages: list[ChatMessage] = Field(  # type: ignore[assignment]
        None, description="A chat, rendered with the model's template first."
    )
    add_special_tokens: bool | None = Field(
        None, description="Default: true for a prompt, false for messages (the template has them)."
    )
    add_generation_prompt: bool = True


class TokenizeResponse(ResponseModel):
    tokens: list[int]
    count: int
    max_model_len: int


class DetokenizeRequest(OpenAIModel):
    model: str | None = None
    tokens: list[int]


class DetokenizeResponse(ResponseModel):
    prompt: str


class TokenizerInfoResponse(ResponseModel):
    eos_token: str | None = None
    bos_token: str | None = None
    pad_token: str | None = None
    eos_token_id: int | None = None
    chat_template: str | None = None
    vocab_size: int
    model_max_length: int


class StatusResponse(ResponseModel):
    status: str


class VersionResponse(ResponseModel):
    version: str
    model: str | None = None
    """The served model, once loaded."""
    precision: PrecisionInfo | None = None
