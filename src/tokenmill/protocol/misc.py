"""Models of the non-generation endpoints: models, tokenizer, health and stats."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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


class ModelList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TokenizeRequest(OpenAIModel):
    """Either `prompt` (text) or `messages` (rendered with the chat template first)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
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
