"""ONNX export with KV-cache inputs/outputs: onnxruntime's greedy tokens are the engine's."""

import numpy as np
import torch

from tests.optimize.conftest import tiny_arch, tiny_model
from tokenmill import LLM, SamplingParams
from tokenmill.optimize.checkpoint import float_state, write_model_dir
from tokenmill.optimize.forward import forward_logits
from tokenmill.optimize.onnx_export import ONNX_FILE, OnnxTarget, export_onnx


def test_onnx_graph_matches_logits_and_greedy_tokens(tmp_path, tiny_tokenizer):
    model = tiny_model(tiny_arch(layer_num_heads=(6, 4, 6)))
    export_onnx(model, tmp_path / ONNX_FILE)
    write_model_dir(tmp_path, model.arch, tiny_tokenizer, float_state(model))
    ort = OnnxTarget(tmp_path / ONNX_FILE, tiny_tokenizer, eos_ids={2}, max_len=256)
    prompt = [5, 17, 42, 9, 100, 3]

    # Whole prompt, then the same prompt split across two calls through the KV outputs.
    logits, _ = ort.run(np.array([prompt]), ort._empty(1))
    want = forward_logits(model, [torch.tensor(prompt)]).numpy()
    assert np.allclose(logits[0], want, atol=1e-4)
    _, past = ort.run(np.array([prompt[:4]]), ort._empty(1))
    tail, present = ort.run(np.array([prompt[4:]]), past)
    assert np.allclose(tail[0], want[4:], atol=1e-4)
    assert present["past_key_values.1.key"].shape == (1, 2, 6, 16)

    llm = LLM(str(tmp_path), dtype="float32", num_kv_blocks=64, max_model_len=128)
    prompts = [prompt, [7, 8, 9, 10], [250, 3, 3, 17, 60]]
    engine = [
        list(o.outputs[0].token_ids)
        for o in llm.generate(
            prompts, SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
        )
    ]
    onnx = [ort._decode([p], 12, stop=False)[0] for p in prompts]
    assert onnx == engine
    batch = ort._decode([prompt[:4], prompts[1]], 12, stop=False)  # equal-length batch
    assert batch[1] == engine[1]
