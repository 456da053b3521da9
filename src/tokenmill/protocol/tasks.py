"""POST /v1/classify and /v1/ner: requests and responses (tokenmill's own endpoints)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.common import OpenAIModel, ResponseModel

MAX_TASK_INPUTS = 256
PRESETS: dict[str, tuple[str, list[str]]] = {
    "sentiment": (
        "What is the sentiment of this text? Answer positive or negative.",
        ["positive", "negative"],
    ),
}
"""Preset task -> (instruction, labels)."""


def _inputs(raw: str | list[str]) -> list[str]:
    items = [raw] if isinstance(raw, str) else list(raw)
    if not items:
        raise InvalidRequestError("input must not be an empty list.", param="input")
    if len(items) > MAX_TASK_INPUTS:
        raise InvalidRequestError(
            f"input has {len(items)} items; at most {MAX_TASK_INPUTS} per request.", param="input"
        )
    for i, item in enumerate(items):
        if not item.strip():
            raise InvalidRequestError(f"input[{i}] is empty.", param="input")
    return items


class ClassifyRequest(OpenAIModel):
    """Label probabilities for each input: `labels`, or a preset `task`."""

    model: str | None = None
    input: str | list[str] = Field(description=f"A text or up to {MAX_TASK_INPUTS} texts.")
    labels: list[str] | None = Field(None, description="Two to 20 candidate labels.")
    task: Literal["sentiment"] | None = Field(None, description="A preset: its labels.")
    instruction: str | None = Field(None, description="Overrides the preset's instruction.")
    user: str | None = None

    def validated(self) -> tuple[list[str], str, list[str]]:
        """(inputs, instruction, labels); InvalidRequestError for a bad combination."""
        if (self.labels is None) == (self.task is None):
            raise InvalidRequestError(
                'Send exactly one of labels (a list) or task (e.g. "sentiment").', param="labels"
            )
        if self.task is not None:
            instruction, labels = PRESETS[self.task]
        else:
            labels = list(self.labels or [])
            instruction = f"Which of these labels fits the text best: {', '.join(labels)}?"
        if not 2 <= len(labels) <= 20 or len(set(labels)) != len(labels):
            raise InvalidRequestError("labels must be 2 to 20 distinct strings.", param="labels")
        if any(not label.strip() for label in labels):
            raise InvalidRequestError("labels must not be empty strings.", param="labels")
        return _inputs(self.input), self.instruction or instruction, labels


class LabelScore(ResponseModel):
    label: str
    probability: float


class Classification(ResponseModel):
    index: int
    label: str
    """The most probable label."""
    scores: list[LabelScore]
    """Every label's probability (they sum to 1), most probable first."""


class TaskUsage(ResponseModel):
    prompt_tokens: int
    total_tokens: int


class ClassifyResponse(ResponseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Classification]
    usage: TaskUsage


class NerRequest(OpenAIModel):
    model: str | None = None
    input: str | list[str] = Field(description=f"A text or up to {MAX_TASK_INPUTS} texts.")
    user: str | None = None

    def validated(self) -> list[str]:
        return _inputs(self.input)


class Entity(ResponseModel):
    text: str
    label: str
    start: int
    """Character offset into the input where the entity starts."""
    end: int
    """Character offset just past its end: input[start:end] == text."""
    score: float


class NerResult(ResponseModel):
    index: int
    entities: list[Entity]


class NerResponse(ResponseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[NerResult]
    usage: TaskUsage
