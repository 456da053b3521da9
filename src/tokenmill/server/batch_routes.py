"""Routes of the Files and Batches endpoints (OpenAI's Batch API); the work is BatchService's."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from starlette.responses import Response

from tokenmill.gateway.call import Caller
from tokenmill.protocol.batch import BatchCreateRequest, BatchList, BatchObject, FileObject
from tokenmill.protocol.common import ErrorResponse
from tokenmill.server.auth import CALLER_SCOPE_KEY
from tokenmill.server.serving.batches import BatchService

FILES_PATH = "/v1/files"
_ERRORS = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (400, "Invalid parameters."),
        (404, "No such file or batch (or not the caller's)."),
        (413, "The file is larger than --batch-max-file-mib."),
    ]
}


def install_batch_routes(app: FastAPI, service: BatchService) -> None:
    """Adds /v1/files and /v1/batches to `app`."""

    def caller(raw: Request) -> Caller:
        return raw.scope.get(CALLER_SCOPE_KEY) or service.state.anonymous_caller

    @app.post(FILES_PATH, response_model=FileObject, responses=_ERRORS, tags=["batch"])
    async def upload_file(
        raw: Request, file: Annotated[UploadFile, File()], purpose: Annotated[str, Form()]
    ) -> FileObject:
        """Upload a JSONL file of requests (multipart, purpose `batch`)."""
        return await service.upload(caller(raw), file, purpose)

    @app.get(
        FILES_PATH + "/{file_id}", response_model=FileObject, responses=_ERRORS, tags=["batch"]
    )
    async def get_file(file_id: str, raw: Request) -> FileObject:
        """A file's description."""
        return await service.get_file(caller(raw), file_id)

    @app.get(FILES_PATH + "/{file_id}/content", responses=_ERRORS, tags=["batch"])
    async def get_file_content(file_id: str, raw: Request) -> Response:
        """A file's bytes: an uploaded input, or a batch's output or error JSONL."""
        return await service.file_content(caller(raw), file_id)

    @app.post("/v1/batches", response_model=BatchObject, responses=_ERRORS, tags=["batch"])
    async def create_batch(body: BatchCreateRequest, raw: Request) -> BatchObject:
        """Start a batch over an uploaded file; it runs at low priority."""
        return await service.create(caller(raw), body)

    @app.get("/v1/batches", response_model=BatchList, responses=_ERRORS, tags=["batch"])
    async def list_batches(raw: Request, after: str | None = None, limit: int = 20) -> BatchList:
        """The caller's batches, newest first; `after` is the last id of the previous page."""
        return await service.list(caller(raw), after, limit)

    @app.get(
        "/v1/batches/{batch_id}", response_model=BatchObject, responses=_ERRORS, tags=["batch"]
    )
    async def get_batch(batch_id: str, raw: Request) -> BatchObject:
        """A batch's status, request counts and, once done, its output and error files."""
        return await service.get(caller(raw), batch_id)

    @app.post(
        "/v1/batches/{batch_id}/cancel",
        response_model=BatchObject,
        responses=_ERRORS,
        tags=["batch"],
    )
    async def cancel_batch(batch_id: str, raw: Request) -> BatchObject:
        """Cancel a batch: requests in flight finish, the rest end as batch_cancelled."""
        return await service.cancel(caller(raw), batch_id)
