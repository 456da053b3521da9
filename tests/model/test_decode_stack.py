"""The native decode stack (`llama_decode_stack`) stands in for the layer-by-layer path
exactly: same tokens and the same logprob bits, on the packaged SmolLM2's GGUF blocks."""

from __future__ import annotations

import pytest

from tokenmill import LLM, SamplingParams
from tokenmill.model.kernels import cpu_kernels
from tokenmill.model.layers.decode_stack import DecodeStack

pytestmark = pytest.mark.skipif(cpu_kernels() is None, reason="needs the native kernels")


@pytest.fixture(scope="module")
def llm(smollm_file):
    return LLM(num_threads=1, max_num_seqs=4, kv_cache_memory_gib=0.25, max_model_len=1024)


def _generate(llm):
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=3)
    prompts = ["The capital of France is", "def fib(n):\n    return", "Tell me a story."]
    outs = llm.generate(prompts, params)
    return [(o.outputs[0].token_ids, o.outputs[0].logprobs) for o in outs]


def test_stack_equals_layer_by_layer_bit_for_bit(llm, monkeypatch):
    model = llm.engine.runner.model
    assert model._decode_stack() is not None, "the default GGUF blocks should take the stack"
    calls = []
    real_call = DecodeStack.__call__

    def counted(self, *args):
        out = real_call(self, *args)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(DecodeStack, "__call__", counted)
    stacked = _generate(llm)
    assert any(calls), "no decode step went through the stack"
    assert not all(calls), "prefill steps must take the layer path"
    monkeypatch.setattr(DecodeStack, "__call__", lambda self, *a: None)
    layered = _generate(llm)
    assert stacked == layered


def test_float_weights_take_the_layer_path(smollm):
    """`--dtype float32` holds nn.Linear weights: the stack declines them."""
    assert smollm.model._decode_stack() is None
