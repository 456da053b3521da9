"""vLLM's beam-search fields on both request models, turned into SamplingParams."""

from __future__ import annotations

import pytest

from tokenmill.errors import InvalidRequestError
from tokenmill.protocol.chat import ChatCompletionRequest
from tokenmill.protocol.completion import CompletionRequest
from tokenmill.sampling_params import BeamSpec, SamplingDefaults

MODEL_DEFAULTS = SamplingDefaults(temperature=0.2, top_p=0.9, top_k=20, repetition_penalty=1.1)
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def params(kind, **body):
    model = CompletionRequest if kind == "completion" else ChatCompletionRequest
    extra = {"prompt": "hi"} if kind == "completion" else CHAT
    return model.model_validate({**extra, **body}).to_sampling_params(MODEL_DEFAULTS)


@pytest.mark.parametrize("kind", ["completion", "chat"])
def test_width_from_best_of_else_n_and_no_model_defaults(kind):
    p = params(kind, use_beam_search=True, n=2, best_of=4, length_penalty=0.5)
    assert p.beam == BeamSpec(4, 0.5, False) and p.n == 2
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.0, 1.0, 0, 1.0)
    assert params(kind, use_beam_search=True, n=3, early_stopping="never").beam == BeamSpec(
        3, 1.0, "never"
    )
    assert params(kind).beam is None


@pytest.mark.parametrize("kind", ["completion", "chat"])
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"use_beam_search": True, "temperature": 0.5}, "temperature"),
        ({"use_beam_search": True, "top_k": 5}, "top_k"),
        ({"use_beam_search": True, "n": 3, "best_of": 2}, "best_of"),
        (
            {"use_beam_search": True, "structured_outputs": {"regex": "a+"}},
            "structured_outputs.regex",
        ),
        ({"early_stopping": True}, "early_stopping"),
        ({"best_of": 3}, "best_of"),
    ],
)
def test_conflicts_name_the_field(kind, body, param):
    with pytest.raises(InvalidRequestError) as err:
        params(kind, **body)
    assert err.value.param == param
