"""Export to ONNX with KV-cache inputs and outputs, and run it with onnxruntime.

The graph (opset 17, exported with torch's TorchScript-based exporter):

    inputs   input_ids                    int64 (batch, seq)
             past_key_values.{i}.key      float32 (batch, num_kv_heads, past, head_dim)
             past_key_values.{i}.value    (same), one pair per layer; past may be 0
    outputs  logits                       float32 (batch, seq, vocab)
             present.{i}.key / .value     (batch, num_kv_heads, past + seq, head_dim)

Positions are past .. past + seq - 1 for every row (no padding inside a batch). The
graph is traced from `KVCacheDecoder`, a plain-attention view over the same modules
tokenmill serves, so its weights are the model's own.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tokenmill.model.models.llama import LlamaForCausalLM
from tokenmill.model.tokenizer import Tokenizer

ONNX_FILE = "model.onnx"
OPSET = 17


class KVCacheDecoder(nn.Module):
    """LlamaForCausalLM with dense per-layer K/V tensors instead of the paged cache."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor):
        """input_ids: (B, T); past: key_0, value_0, key_1, ... each (B, nkv, P, hd).
        Returns (logits (B, T, V), present key_0, value_0, ...)."""
        m = self.model
        t = input_ids.shape[1]
        p = past[0].shape[2]
        positions = torch.arange(t) + p  # (T,)
        cos = m.rotary.cos_cache[positions][None, :, None, :]  # (1, T, 1, hd // 2)
        sin = m.rotary.sin_cache[positions][None, :, None, :]
        q_pos = positions[:, None]
        k_pos = torch.arange(t + p)[None, :]
        mask = k_pos <= q_pos  # (T, P + T)
        h = m.embed_tokens(input_ids)  # (B, T, hidden)
        presents = []
        for i, layer in enumerate(m.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            qkv = attn.qkv_proj(x)
            q, k, v = qkv.split((attn.q_size, attn.kv_size, attn.kv_size), dim=-1)
            b = q.shape[0]
            q = _rotate(q.view(b, t, attn.num_heads, attn.head_dim), cos, sin).transpose(1, 2)
            k = _rotate(k.view(b, t, attn.num_kv_heads, attn.head_dim), cos, sin).transpose(1, 2)
            v = v.view(b, t, attn.num_kv_heads, attn.head_dim).transpose(1, 2)
            k = torch.cat([past[2 * i], k], dim=2)  # (B, nkv, P + T, hd)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            group = attn.num_heads // attn.num_kv_heads
            kk = k.repeat_interleave(group, dim=1)  # (B, nh, P + T, hd)
            vv = v.repeat_interleave(group, dim=1)
            scores = (q @ kk.transpose(2, 3)) * attn.attn.scale  # (B, nh, T, P + T)
            scores = scores.masked_fill(~mask, float("-inf"))
            o = torch.softmax(scores, dim=-1) @ vv  # (B, nh, T, hd)
            o = o.transpose(1, 2).reshape(b, t, attn.q_size)
            h = h + attn.o_proj(o)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        h = m.norm(h)
        logits = m.compute_logits(h)
        return (logits, *presents)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", *past], ["logits", *present]


@torch.no_grad()
def export_onnx(model: LlamaForCausalLM, path: Path) -> None:
    """Traces `model` into an ONNX file at `path`; dynamic batch, sequence and past."""
    arch = model.arch
    n = len(model.layers)
    inputs, outputs = io_names(n)
    ids = torch.tensor([[1, 2, 3]])
    past = [torch.zeros(1, arch.num_kv_heads, 2, arch.head_dim) for _ in range(2 * n)]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    for name in inputs[1:]:
        axes[name] = {0: "batch", 2: "past"}
    for name in outputs[1:]:
        axes[name] = {0: "batch", 2: "total"}
    torch.onnx.export(
        KVCacheDecoder(model).eval(),
        (ids, *past),
        str(path),
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=axes,
        opset_version=OPSET,
        dynamo=False,
    )


class OnnxTarget:
    """An exported graph run by onnxruntime, measured like an engine (EvalTarget)."""

    def __init__(
        self, path: Path, tokenizer: Tokenizer, eos_ids: set[int], max_len: int, threads: int = 1
    ) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.kernel_path = f"onnxruntime CPUExecutionProvider, {threads} intra-op thread(s)"
        self.tokenizer = tokenizer
        self.eos_ids = eos_ids
        self.path = path
        self.max_len = max_len
        past = self.session.get_inputs()[1]
        self.num_layers = (len(self.session.get_inputs()) - 1) // 2
        self.num_kv_heads, self.head_dim = int(past.shape[1]), int(past.shape[3])

    def _empty(self, batch: int) -> dict[str, np.ndarray]:
        shape = (batch, self.num_kv_heads, 0, self.head_dim)
        names, _ = io_names(self.num_layers)
        return {n: np.zeros(shape, dtype=np.float32) for n in names[1:]}

    def run(self, ids: np.ndarray, past: dict[str, np.ndarray]):
        """One call: (logits (B, T, V), the next call's past)."""
        out = self.session.run(None, {"input_ids": ids, **past})
        names, _ = io_names(self.num_layers)
        return out[0], dict(zip(names[1:], out[1:], strict=True))

    def prompt_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        result = []
        for s in seqs:
            logits, _ = self.run(np.array([s], dtype=np.int64), self._empty(1))
            lp = torch.log_softmax(torch.from_numpy(logits[0, :-1]), dim=-1)
            result.append(lp.gather(1, torch.tensor(s[1:])[:, None])[:, 0].tolist())
        return result

    def _decode(self, prompts: list[list[int]], max_tokens: int, stop: bool) -> list[list[int]]:
        ids = np.array(prompts, dtype=np.int64)  # equal lengths: no padding
        past = self._empty(len(prompts))
        out: list[list[int]] = [[] for _ in prompts]
        done = [False] * len(prompts)
        for _ in range(max_tokens):
            logits, past = self.run(ids, past)
            nxt = logits[:, -1].argmax(axis=-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    out[i].append(t)
                    done[i] = stop and t in self.eos_ids
            if all(done):
                break
            ids = nxt[:, None].astype(np.int64)
        return out

    def greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        return [self._decode([p], max_tokens, stop=True)[0] for p in prompts]

    def throughput(self, prompts: list[list[int]], new_tokens: int) -> float:
        start = time.perf_counter()
        outs = self._decode(prompts, new_tokens, stop=False)
        return sum(len(o) for o in outs) / (time.perf_counter() - start)

    def memory_bytes(self) -> int:
        import onnx

        graph = onnx.load(str(self.path), load_external_data=False).graph
        return sum(int(np.prod(t.dims)) * 4 for t in graph.initializer if t.data_type == 1)
