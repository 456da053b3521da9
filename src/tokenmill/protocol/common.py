"""Models shared by the chat and completions endpoints."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from tokenmill.errors import InvalidRequestError
from tokenmill.sampling_params import BEAM_NEUTRAL, BeamSpec, StructuredSpec

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_N = 128


class OpenAIModel(BaseModel):
    """Base of request models: unknown fields are kept (and logged once), never refused,
    because clients send fields of newer API versions; NaN and infinity are refused.

    Types are strict, as OpenAI's are: "10" is not an integer, "yes" not a boolean and
    true not a token id (an integer is still a valid number).
    """

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)


class ResponseModel(BaseModel):
    """Base of response models."""

    model_config = ConfigDict(allow_inf_nan=True)


class ErrorDetail(ResponseModel):
    message: str
    type: str
    param: str | None = None
    code: str
    """A snake_case string, e.g. "context_length_exceeded", "invalid_value"."""


class ErrorResponse(ResponseModel):
    """Every error the API returns has this shape."""

    error: ErrorDetail


class StreamOptions(OpenAIModel):
    include_usage: bool = False
    """Send a last chunk, with empty choices, carrying the request's usage."""


class JsonSchemaFormat(OpenAIModel):
    """OpenAI's `response_format.json_schema`. The output always follows `schema`,
    whether `strict` is set or not (a constrained decoder has no cheaper mode)."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    """"json_object": any JSON object; "json_schema": an object valid under `json_schema`."""
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(OpenAIModel):
    """vLLM's `structured_outputs`: exactly one of these constraints."""

    model_config = ConfigDict(populate_by_name=True)

    choice: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1)
    regex: str | None = Field(None, min_length=1)
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    """A JSON Schema, as an object or its text."""
    grammar: str | None = Field(None, min_length=1)
    """An EBNF grammar whose start rule is `root` (xgrammar's dialect of GBNF)."""
    json_object: bool | None = None


class PromptTokensDetails(ResponseModel):
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""


class UsageInfo(ResponseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None


class DropNoneModel(ResponseModel):
    """Serialises without its None fields (stream deltas: absent, not null)."""

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class SamplingFields(OpenAIModel):
    """Sampling controls accepted by both generation endpoints."""

    model: str | None = Field(None, description="Served model name; omitted means the one model.")
    n: int = Field(1, ge=1, le=MAX_N, description="Completions to generate per prompt.")
    temperature: float | None = Field(
        None, ge=0.0, le=100.0, description="0 means greedy; unset: the model's default."
    )
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Unset: the model's default.")
    top_k: int | None = Field(None, ge=-1, description="0 or -1 disables.")
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=100.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100.0, le=100.0)]] | None = Field(
        None,
        description="Token id (as a string) -> bias in [-100, 100].",
        json_schema_extra={"propertyNames": {"pattern": "^[0-9]+$"}},
    )
    seed: int | None = Field(None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = Field(
        None, description="Strings that end generation; never part of the returned text."
    )
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="Lower values are scheduled first.")
    best_of: int | None = Field(None, ge=1, le=MAX_N)
    """With use_beam_search: the beam width (else n). Without it, must equal n."""
    use_beam_search: bool = Field(False, description="vLLM's beam search instead of sampling.")
    length_penalty: float = Field(
        1.0, ge=-10.0, le=10.0, description="Beam search: exponent of the length penalty."
    )
    early_stopping: bool | Literal["never"] = Field(
        False, description='Beam search: true, false or "never" (transformers\' meaning).'
    )

    def sampling_kwargs(self) -> dict[str, Any]:
        """The SamplingParams arguments these fields set; None where the client left a
        field for the model's defaults to fill (SamplingDefaults.params)."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty,
            "logit_bias": parse_logit_bias(self.logit_bias),
            "seed": self.seed,
            "stop": stop,
            "stop_token_ids": list(self.stop_token_ids or []),
            "ignore_eos": self.ignore_eos,
            "min_tokens": self.min_tokens,
            "skip_special_tokens": self.skip_special_tokens,
            "include_stop_str_in_output": self.include_stop_str_in_output,
        }

    def beam_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """`kwargs` (from sampling_kwargs) with the beam-search fields applied: the beam
        spec, and the neutral value of every sampling field the client left unset (a
        model's sampling defaults do not apply to beam search). Raises
        InvalidRequestError for beam fields sent without use_beam_search."""
        if not self.use_beam_search:
            if self.best_of is not None and self.best_of != self.n:
                raise InvalidRequestError(
                    f"best_of={self.best_of} is only supported with use_beam_search; "
                    f"without it, it must equal n ({self.n}).",
                    param="best_of",
                )
            for name, unset in (("length_penalty", 1.0), ("early_stopping", False)):
                if getattr(self, name) != unset:
                    raise InvalidRequestError(
                        f"{name} applies to beam search only: set use_beam_search to true.",
                        param=name,
                    )
            return kwargs
        width = self.best_of if self.best_of is not None else self.n
        out = dict(kwargs)
        for name, neutral in BEAM_NEUTRAL.items():
            if out.get(name) is None:
                out[name] = neutral
        out["beam"] = BeamSpec(width, self.length_penalty, self.early_stopping)
        return out

    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk."""
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def unknown_fields(model: BaseModel, prefix: str = "") -> list[str]:
    """Dotted paths of every field the client sent that the API does not define, in
    nested objects too (`messages[0].foo`)."""
    found = [f"{prefix}{name}" for name in (model.model_extra or {})]
    for name in type(model).model_fields:
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            if isinstance(item, BaseModel):
                where = f"{prefix}{name}[{i}]." if isinstance(value, list) else f"{prefix}{name}."
                found += unknown_fields(item, where)
    return found


def lone_surrogate_path(value: Any, path: str = "") -> str | None:
    """The dotted path (`messages[0].content[1].text`) of the first string in `value`, a
    request model or anything inside one (extra fields and keys too), that holds a lone
    UTF-16 surrogate. JSON can spell one ("\\ud800") but it is not text: no tokenizer,
    header or log encoder takes it."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(value, BaseModel):
        items = [(name, getattr(value, name)) for name in type(value).model_fields]
        items += list((value.model_extra or {}).items())
        for name, item in items:
            found = lone_surrogate_path(name, path or "body") or lone_surrogate_path(
                item, f"{path}.{name}" if path else name
            )
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = lone_surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            found = lone_surrogate_path(key, path) or lone_surrogate_path(item, f"{path}.{key}")
            if found:
                return found
    return None


def check_unicode(body: BaseModel) -> None:
    """Refuses (400, the field named) a request holding a lone surrogate anywhere."""
    path = lone_surrogate_path(body)
    if path is not None:
        raise InvalidRequestError(
            f"{path} contains a lone UTF-16 surrogate (such as \\ud800), which is not valid "
            "Unicode text. Send well-formed UTF-8.",
            param=path,
        )


def parse_logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """OpenAI sends token ids as JSON object keys, hence strings."""
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        try:
            out[int(key)] = float(value)
        except ValueError:
            raise InvalidRequestError(
                f"logit_bias keys must be token ids, got {key!r}.", param="logit_bias"
            ) from None
    return out


def structured_spec(
    response_format: ResponseFormat | None, structured_outputs: StructuredOutputs | None
) -> StructuredSpec | None:
    """The engine's constraint for these fields, None when the output is free text.
    Raises InvalidRequestError when both are given, or when either is incomplete.
    Whether a schema, regex or grammar compiles is checked by the engine at admission."""
    text_only = response_format is None or response_format.type == "text"
    if structured_outputs is not None and not text_only:
        raise InvalidRequestError(
            "Send either response_format or structured_outputs, not both.",
            param="structured_outputs",
        )
    if structured_outputs is not None:
        return _from_structured_outputs(structured_outputs)
    if text_only:
        return None
    if response_format.type == "json_object":
        return StructuredSpec("json_object", param="response_format")
    if response_format.json_schema is None:
        raise InvalidRequestError(
            "response_format of type json_schema needs a `json_schema` object with `name` "
            "and `schema`.",
            param="response_format.json_schema",
        )
    return StructuredSpec(
        "json_schema",
        _schema_text(response_format.json_schema.schema_, "response_format.json_schema.schema"),
        param="response_format.json_schema.schema",
    )


def _from_structured_outputs(so: StructuredOutputs) -> StructuredSpec | None:
    given = {
        name: value
        for name, value in (
            ("choice", so.choice),
            ("regex", so.regex),
            ("json", so.json_),
            ("grammar", so.grammar),
            ("json_object", so.json_object or None),
        )
        if value is not None
    }
    if len(given) > 1:
        raise InvalidRequestError(
            f"structured_outputs takes one constraint; got {sorted(given)}.",
            param="structured_outputs",
        )
    if not given:
        return None
    (name, value), param = next(iter(given.items())), f"structured_outputs.{next(iter(given))}"
    if name == "choice":
        return StructuredSpec("choice", json.dumps(value, ensure_ascii=False), param=param)
    if name == "json":
        return StructuredSpec("json_schema", _schema_text(value, param), param=param)
    if name == "json_object":
        return StructuredSpec("json_object", param=param)
    return StructuredSpec(name, value, param=param)


def _schema_text(schema: dict[str, Any] | str, param: str) -> str:
    """A schema as compact text. Keys keep their order: the grammar writes properties in
    schema order, so two orders are two grammars."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{param} is not valid JSON: {exc}.", param=param) from None
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{param} must be a JSON Schema object.", param=param)
    return json.dumps(schema, ensure_ascii=False)
