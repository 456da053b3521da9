"""The Files and Batches endpoints' shapes (OpenAI's `file`, `batch` and list objects)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.protocol.common import OpenAIModel, ResponseModel

COMPLETION_WINDOWS = {"24h": 24 * 3600}
"""OpenAI accepts only "24h"."""


class FileObject(ResponseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None


class BatchCreateRequest(OpenAIModel):
    input_file_id: str = Field(description="An uploaded file with purpose batch.")
    endpoint: str = Field(description="/v1/chat/completions or /v1/completions.")
    completion_window: str = Field(description='Only "24h", as OpenAI.')
    metadata: dict[str, str] | None = Field(
        None, description="At most 16 pairs; keys up to 64 characters, values up to 512."
    )


class BatchRequestCounts(ResponseModel):
    total: int
    completed: int
    failed: int


class BatchError(ResponseModel):
    code: str | None = None
    message: str | None = None
    param: str | None = None
    line: int | None = None


class BatchErrors(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class InputTokensDetails(ResponseModel):
    cached_tokens: int


class OutputTokensDetails(ResponseModel):
    reasoning_tokens: int = 0


class BatchUsage(ResponseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int


class BatchObject(ResponseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    model: str | None = None
    errors: BatchErrors | None = None
    input_file_id: str
    completion_window: str
    status: Literal[
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
    ]
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None


class BatchList(ResponseModel):
    object: Literal["list"] = "list"
    data: list[BatchObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool
