"""What drift detection reads from a request: the record, and the features taken from it.

A DriftRecord is what the server knows when a request ends (or one line of a JSONL
file of past requests). An Observation is the record reduced to the features the
signals compare: the prompt's embedding, length and script; the output's length,
finish reason, kind (answered, empty, refused) and mean token logprob. Features that
are unknown (no logprobs asked, no embedding model loaded) are None, and the signals
that need them skip that observation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokenmill.errors import InvalidRequestError
from tokenmill.observability.drift.script import script_category

REFUSAL_PATTERNS: tuple[str, ...] = (
    r"i(?:'m| am) (?:sorry|afraid),? but i (?:can(?:'t|not)|won't|am unable|'m unable)",
    (
        r"(?:sorry, )?i (?:can(?:'t|not)|won't|will not) (?:help|assist|provide|comply"
        r"|do that|answer|fulfil|fulfill|create|generate|write|share|support)"
    ),
    r"i(?:'m| am) (?:not able|unable) to (?:help|assist|provide|comply|answer|fulfil|do that)",
    r"i must (?:decline|refuse)",
    r"as an ai(?: language model)?,? i (?:can(?:'t|not)|don't|do not|am not able|am unable)",
    r"i(?:'m| am) not (?:allowed|permitted) to",
    r"(?:this|that|your) request (?:is|goes) against",
)
"""A refusal: one of these (case-insensitive) within the output's first 300 characters.
They cover the stock phrasings of instruction-tuned models declining a request; an
answer that merely mentions inability later on is not counted."""
_REFUSAL = re.compile("|".join(f"(?:{p})" for p in REFUSAL_PATTERNS), re.IGNORECASE)
_REFUSAL_SPAN = 300


def answer_kind(output: str) -> str:
    """ "empty" (nothing but whitespace), "refused" (see REFUSAL_PATTERNS) or
    "answered". Curly apostrophes count as straight ones."""
    if not output.strip():
        return "empty"
    head = output[:_REFUSAL_SPAN].replace("\u2019", "'")
    return "refused" if _REFUSAL.search(head) else "answered"


@dataclass(frozen=True)
class DriftRecord:
    """One finished request as drift detection sees it. Output fields are None when
    unknown (e.g. an input-only profile)."""

    prompt: str
    """The prompt text (for chat: the messages' text as the server chooses to join it)."""
    output: str | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    """ "stop", "length", "content_filter", ..."""
    mean_logprob: float | None = None
    """Mean log-probability of the generated tokens (the model's confidence)."""

    @classmethod
    def from_dict(cls, data: dict, where: str = "record") -> DriftRecord:
        """From a JSON object with these field names; InvalidRequestError naming
        `where` and the field for a missing prompt or a value of the wrong type."""
        if not isinstance(data, dict) or not isinstance(data.get("prompt"), str):
            raise InvalidRequestError(f"{where}: needs a string field 'prompt'.")
        checks = {
            "output": (str,),
            "output_tokens": (int,),
            "finish_reason": (str,),
            "mean_logprob": (int, float),
        }
        for key, types in checks.items():
            value = data.get(key)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
                raise InvalidRequestError(
                    f"{where}: field {key!r} must be {' or '.join(t.__name__ for t in types)}"
                    f" or null, got {value!r}."
                )
        logprob = data.get("mean_logprob")
        if logprob is not None and not math.isfinite(logprob):
            raise InvalidRequestError(f"{where}: mean_logprob must be finite, got {logprob}.")
        return cls(
            prompt=data["prompt"],
            output=data.get("output"),
            output_tokens=data.get("output_tokens"),
            finish_reason=data.get("finish_reason"),
            mean_logprob=None if logprob is None else float(logprob),
        )


def read_records(path: str | Path) -> Iterator[DriftRecord]:
    """The records of a JSONL file, one JSON object a line (blank lines skipped);
    InvalidRequestError naming the line of a malformed one."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequestError(f"{where}: not JSON ({exc.msg}).") from None
            yield DriftRecord.from_dict(data, where)


@dataclass(frozen=True)
class Observation:
    """A record's features, as the signals compare them."""

    embedding: np.ndarray | None
    """(dim,) float32 prompt embedding."""
    prompt_chars: int
    script: str
    output_tokens: int | None
    finish_reason: str | None
    answer_kind: str | None
    mean_logprob: float | None


def observe(record: DriftRecord, embedding: np.ndarray | None) -> Observation:
    """The features of `record`, given its prompt's embedding (None if not computed;
    embed with truncation, since a long prompt must still be observed). Pure."""
    return Observation(
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
        prompt_chars=len(record.prompt),
        script=script_category(record.prompt),
        output_tokens=record.output_tokens,
        finish_reason=record.finish_reason,
        answer_kind=None if record.output is None else answer_kind(record.output),
        mean_logprob=record.mean_logprob,
    )
