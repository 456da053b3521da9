"""POST /v1/feedback (rate an answer) and GET /v1/feedback (admins read ratings)."""

from __future__ import annotations

import asyncio
import datetime

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from tokenmill.errors import InvalidRequestError, TokenmillError
from tokenmill.observability.feedback import FeedbackStore
from tokenmill.observability.metrics import Metrics
from tokenmill.server.auth import CALLER_SCOPE_KEY

MAX_LIST = 10_000


class FeedbackRequest(BaseModel):
    """A rating of one answer, named by the response's `id`."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The completion's id (the response's `id` field).")
    rating: int = Field(description="-1, 0 or 1 (thumbs), or 1 to 5 (stars).")
    comment: str | None = Field(None, description="Free text, at most 4000 characters.")


class ForbiddenError(TokenmillError):
    """An API key without the right for this endpoint (HTTP 403)."""

    status_code = 403
    error_type = "permission_error"
    default_code = "admin_required"


def parse_since(value: str | None) -> float:
    """Unix seconds from an ISO 8601 time or a number; 0 when absent."""
    if value is None or value == "":
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequestError(
            f"since must be an ISO 8601 time (2026-11-30T16:00:00Z) or Unix seconds; got "
            f"{value!r}.",
            param="since",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def install_feedback(app: FastAPI, store: FeedbackStore, metrics: Metrics | None) -> None:
    """Adds the two feedback routes; mutates the app."""

    @app.post("/v1/feedback", tags=["monitoring"])
    async def create_feedback(body: FeedbackRequest, raw: Request) -> dict:
        """Stores a rating of a recent answer, linked to its model version and the
        cache and guardrail decisions that shaped it."""
        caller = raw.scope.get(CALLER_SCOPE_KEY)
        name = None if caller is None or caller.admin else caller.name
        if caller is None:
            name = "anonymous"
        stored = await asyncio.to_thread(store.add, body.id, body.rating, body.comment, name)
        if metrics is not None:
            metrics.feedback.labels(stored.model, stored.model_version, str(stored.rating)).inc()
        return {"object": "feedback", **stored.to_dict()}

    @app.get("/v1/feedback", tags=["monitoring"])
    async def list_feedback(raw: Request, since: str | None = None, limit: int = 1000) -> dict:
        """Ratings stored after `since` (ISO 8601 or Unix seconds), oldest first; with
        API keys on, for admin keys only."""
        caller = raw.scope.get(CALLER_SCOPE_KEY)
        if caller is not None and not caller.admin:
            raise ForbiddenError(
                f"Reading feedback needs an admin key; the key {caller.name!r} is not one."
            )
        if not 1 <= limit <= MAX_LIST:
            raise InvalidRequestError(
                f"limit must be in [1, {MAX_LIST}]; got {limit}.", param="limit"
            )
        rows = await asyncio.to_thread(store.since, parse_since(since), limit)
        return {"object": "list", "data": [r.to_dict() for r in rows]}
