"""Structured output on the real default model (SmolLM2): sampled at temperature 1 with
several seeds, every output under a schema parses and validates; choice and regex hold;
constrained and free requests share a batch. Slow (a few hundred decode steps)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tokenmill.engine.llm import LLM
from tokenmill.errors import InvalidRequestError
from tokenmill.sampling_params import SamplingParams, StructuredSpec

pytestmark = pytest.mark.slow

SEEDS = (1, 2, 3)
MAX_TOKENS = 160

SCHEMAS = {
    "flat_required": {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    },
    "bounded_numbers": {
        "type": "object",
        "properties": {
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "count": {"type": "integer", "minimum": 10, "maximum": 99},
        },
        "required": ["score", "count"],
    },
    "enum_and_bool": {
        "type": "object",
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "ok": {"type": "boolean"},
        },
        "required": ["colour", "ok"],
    },
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 15}},
                        "required": ["city"],
                    },
                },
                "required": ["id", "address"],
            }
        },
        "required": ["user"],
    },
    "array_of_objects": {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "minItems": 1,
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"},
                        "qty": {"type": "integer", "minimum": 1, "maximum": 5},
                    },
                    "required": ["sku", "qty"],
                },
            }
        },
        "required": ["items"],
    },
    "top_level_array": {
        "type": "array",
        "items": {"type": "integer", "minimum": -5, "maximum": 5},
        "minItems": 2,
        "maxItems": 4,
    },
    "optional_and_null": {
        "type": "object",
        "properties": {
            "title": {"type": "string", "maxLength": 12},
            "note": {"type": ["string", "null"], "maxLength": 12},
        },
        "required": ["title"],
    },
}


@pytest.fixture(scope="module")
def llm() -> LLM:
    return LLM(max_num_seqs=32)


def _prompt(llm: LLM, text: str) -> str:
    return llm.tokenizer.apply_chat_template([{"role": "user", "content": text}])


def test_every_sampled_output_parses_and_validates(llm: LLM):
    cases = [(name, seed) for name in SCHEMAS for seed in SEEDS]
    params = [
        SamplingParams(
            max_tokens=MAX_TOKENS,
            temperature=1.0,
            seed=seed,
            structured=StructuredSpec("json_schema", json.dumps(SCHEMAS[name])),
        )
        for name, seed in cases
    ]
    prompts = [_prompt(llm, f"Write one JSON example of a {name}.") for name, _ in cases]
    outputs = llm.generate(prompts, params)
    for (name, seed), out in zip(cases, outputs):
        completion = out.outputs[0]
        where = f"schema {name} seed {seed}: {completion.text!r}"
        assert completion.finish_reason == "stop", where
        jsonschema.validate(json.loads(completion.text), SCHEMAS[name])
    # Sampling at temperature 1 must not collapse to one answer per schema.
    texts = {
        name: {o.outputs[0].text for (n, _), o in zip(cases, outputs) if n == name}
        for name in SCHEMAS
    }
    assert sum(len(v) for v in texts.values()) > len(SCHEMAS)


def test_json_object_choice_and_regex(llm: LLM):
    pattern = r"[0-9]{3}-[a-z]{2,4}"
    choices = ["alpha", "beta gamma", "delta"]
    specs = [
        StructuredSpec("json_object"),
        StructuredSpec("choice", json.dumps(choices)),
        StructuredSpec("regex", pattern),
    ]
    params = [
        SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0, seed=s, structured=spec)
        for spec in specs
        for s in SEEDS
    ]
    outputs = llm.generate([_prompt(llm, "Answer.")] * len(params), params)
    texts = [o.outputs[0].text for o in outputs]
    reasons = [o.outputs[0].finish_reason for o in outputs]
    n = len(SEEDS)
    # An object with arbitrary keys can run past max_tokens; one that ends must parse.
    for text, reason in zip(texts[:n], reasons[:n]):
        if reason == "stop":
            assert isinstance(json.loads(text), dict), text
        else:
            assert text.startswith("{"), text
    assert all(t in choices for t in texts[n : 2 * n]), texts
    assert all(re.fullmatch(pattern, t) for t in texts[2 * n :]), texts
    assert all(r == "stop" for r in reasons[n:]), reasons


def test_constrained_and_free_requests_share_a_batch(llm: LLM):
    schema = SCHEMAS["enum_and_bool"]
    free = SamplingParams(max_tokens=24, temperature=0)
    constrained = SamplingParams(
        max_tokens=MAX_TOKENS,
        temperature=0,
        structured=StructuredSpec("json_schema", json.dumps(schema)),
    )
    prompt = _prompt(llm, "Name a colour.")
    alone = llm.generate([prompt], [free])[0].outputs[0].text
    steps_before = llm.engine.num_steps
    mixed = llm.generate([prompt] * 4, [free, constrained, free, constrained])
    steps = llm.engine.num_steps - steps_before
    # Four requests in about as many steps as the longest: they ran together.
    longest = max(len(o.outputs[0].token_ids) for o in mixed)
    assert steps <= longest + 2, (steps, longest)
    assert mixed[0].outputs[0].text == alone == mixed[2].outputs[0].text
    assert not alone.startswith("{")
    for out in (mixed[1], mixed[3]):
        jsonschema.validate(json.loads(out.outputs[0].text), schema)


def test_grammar_is_compiled_once_per_spec(llm: LLM):
    spec = StructuredSpec("regex", "(yes|no)")
    cache = llm.engine.grammars
    llm.generate(["Q?"], SamplingParams(max_tokens=4, structured=spec))
    misses = cache.misses
    llm.generate(["Q?"] * 3, SamplingParams(max_tokens=4, structured=spec, n=2))
    assert cache.misses == misses and cache.hits >= 3


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (StructuredSpec("json_schema", '{"type": "bogus"}'), "bogus"),
        (StructuredSpec("regex", "(ab", param="structured_outputs.regex"), "parenthesis"),
        (StructuredSpec("grammar", "root ::= missing"), "missing"),
    ],
)
def test_invalid_constraints_are_refused(llm: LLM, spec: StructuredSpec, fragment: str):
    with pytest.raises(InvalidRequestError) as err:
        llm.generate(["x"], SamplingParams(max_tokens=4, structured=spec))
    assert fragment in err.value.message and err.value.param == spec.param


def _accept_text(constraint, llm: LLM, text: str) -> None:
    for token in llm.tokenizer.encode(text, add_special_tokens=False):
        constraint.accept(token)


def test_auto_tool_grammar_frees_text_and_constrains_calls(llm: LLM):
    """tool_choice "auto": text is free until `<tool_call>`, then the call must name a
    tool and give arguments valid under its schema."""
    from tokenmill.protocol.chat import ChatCompletionRequest
    from tokenmill.sampling_params import SamplingDefaults

    body = ChatCompletionRequest.model_validate(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "add",
                        "parameters": {
                            "type": "object",
                            "properties": {"a": {"type": "integer"}},
                            "required": ["a"],
                        },
                    },
                }
            ],
        }
    )
    spec = body.to_sampling_params(SamplingDefaults()).structured
    grammars = llm.engine.grammars
    ok = grammars.constraint(spec)
    _accept_text(ok, llm, 'Any text at all. <tool_call>{"name": "add", "arguments": {"a": 5}}')
    _accept_text(ok, llm, "</tool_call>")
    ok.accept(llm.tokenizer.eos_token_id)
    assert ok.is_terminated
    for bad in (
        '<tool_call>{"name": "sub"',  # not a tool
        '<tool_call>{"name": "add", "arguments": {"a": "five"',  # not an integer
    ):
        with pytest.raises(RuntimeError, match="outside the request's grammar"):
            _accept_text(grammars.constraint(spec), llm, bad)


def test_ebnf_grammar_output_is_a_sentence_of_it(llm: LLM):
    grammar = 'root ::= "id-" digit digit ("," " "? "id-" digit digit)*\ndigit ::= [0-9]'
    params = [
        SamplingParams(
            max_tokens=40, temperature=1.0, seed=s, structured=StructuredSpec("grammar", grammar)
        )
        for s in SEEDS
    ]
    outputs = llm.generate([_prompt(llm, "List some ids.")] * len(params), params)
    for out in outputs:
        text = out.outputs[0].text
        if out.outputs[0].finish_reason == "stop":
            assert re.fullmatch(r"id-\d\d(, ?id-\d\d)*", text), text
        else:  # cut by max_tokens: still a prefix of a sentence
            assert re.fullmatch(r"id-\d\d(, ?id-\d\d)*(, ?(i(d(-\d?)?)?)?)?", text), text
