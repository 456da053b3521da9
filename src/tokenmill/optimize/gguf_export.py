"""Export to GGUF (llama.cpp's format) as Q8_0 or Q4_K, with the `gguf` package.

Tensors get llama.cpp's names and, for the llama architecture, its q/k row order.
Q8_0 comes from `gguf.quants`. The package has no Q4_K quantizer, so `quantize_q4_k`
writes the block layout that `gguf.quants.Q4_K.dequantize_blocks` (and llama.cpp) read:
super-blocks of 256 weights in 8 sub-blocks of 32, each sub-block with a 6-bit scale
and 6-bit minimum relative to the super-block's float16 `d` and `dmin`. As llama.cpp
does, a tensor whose rows are not a multiple of 256 falls back to Q5_0.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, LlamaFileType
from gguf.quants import dequantize, quantize
from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models

from tokenmill.errors import ConfigError
from tokenmill.model.arch import ArchConfig
from tokenmill.model.loader.gguf import _BLOCK_NAMES, _GLOBAL_NAMES, _PERMUTED_ARCHS
from tokenmill.model.tokenizer import _pre_tokenizer
from tokenmill.optimize.checkpoint import unfuse

GGUF_METHODS = {"gguf-q8_0": "q8_0", "gguf-q4_k": "q4_k"}
GGUF_FILE = "model.gguf"
Q = GGMLQuantizationType
_PRE_NAMES = ("smollm", "llama-bpe", "qwen2", "gpt2")
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4
QK_K = 256


def gguf_name(hf: str) -> str:
    """llama.cpp's name of HF tensor `hf` ("model.layers.0.self_attn.q_proj.weight" ->
    "blk.0.attn_q.weight")."""
    name = hf.removeprefix("model.")
    base, _, leaf = name.rpartition(".")
    if base.startswith("layers."):
        _, layer, part = base.split(".", 2)
        reverse = {v: k for k, v in _BLOCK_NAMES.items()}
        return f"blk.{layer}.{reverse[part]}.{leaf}"
    reverse = {v.removeprefix("model."): k for k, v in _GLOBAL_NAMES.items()}
    return f"{reverse[base]}.{leaf}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half row order -> llama.cpp's interleaved order (inverse of the
    loader's `unpermute`)."""
    hd = w.shape[0] // n_head
    return w.reshape(n_head, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _f16_up(x: np.ndarray) -> np.ndarray:
    """float32 -> float16, rounded up where rounding to nearest went down, so a scale
    never shrinks the range it must cover."""
    h = x.astype(np.float16)
    low = h.astype(np.float32) < x
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """(N, K) float32, K a multiple of 256 -> (N, K / 256 * 144) uint8 Q4_K blocks."""
    n = rows.size // QK_K
    x = rows.reshape(n, 8, 32).astype(np.float32)
    neg_min = np.maximum(-x.min(axis=-1), 0.0)  # (n, 8): minima as positive offsets
    dmin = _f16_up(neg_min.max(axis=-1) / 63.0)  # (n,)
    dmin32 = dmin.astype(np.float32)
    m = np.where(dmin32[:, None] > 0, np.ceil(neg_min / np.maximum(dmin32[:, None], 1e-30)), 0)
    m = np.clip(m, 0, 63)
    low = -(m * dmin32[:, None])  # (n, 8) the stored minimum, <= the real one
    step = (x.max(axis=-1) - low) / 15.0
    d = _f16_up(step.max(axis=-1) / 63.0)
    d32 = d.astype(np.float32)
    sc = np.where(d32[:, None] > 0, np.ceil(step / np.maximum(d32[:, None], 1e-30)), 0)
    sc = np.clip(sc, 0, 63)
    eff = (sc * d32[:, None])[..., None]  # (n, 8, 1)
    q = np.where(eff > 0, np.round((x - low[..., None]) / np.maximum(eff, 1e-30)), 0)
    q = np.clip(q, 0, 15).astype(np.uint8).reshape(n, 4, 2, 32)
    qs = (q[:, :, 0] | (q[:, :, 1] << 4)).reshape(n, 128)
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    scales = np.empty((n, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    blocks = np.concatenate(
        [d.view(np.uint8).reshape(n, 2), dmin.view(np.uint8).reshape(n, 2), scales, qs], axis=1
    )
    return blocks.reshape(rows.shape[0], -1)


def tensor_type(name: str, shape: tuple[int, ...], kind: str) -> GGMLQuantizationType:
    """The storage type of a tensor under `kind` ("q8_0" or "q4_k")."""
    if len(shape) == 1:
        return Q.F32
    cols = shape[-1]
    if kind == "q8_0":
        return Q.Q8_0 if cols % 32 == 0 else Q.F32
    if cols % QK_K == 0:
        return Q.Q4_K
    return Q.Q5_0 if cols % 32 == 0 else Q.F32


def encode(w: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    if qtype == Q.F32:
        return w.astype(np.float32)
    if qtype == Q.Q4_K:
        return quantize_q4_k(w)
    return quantize(w, qtype)


def gguf_tensors(
    arch: ArchConfig, state: dict[str, torch.Tensor]
) -> Iterator[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array in llama.cpp's row order) for a float state."""
    permuted = arch.architecture in _PERMUTED_ARCHS
    for hf, tensor in unfuse(arch, state).items():
        if hf == "lm_head.weight" and arch.tie_word_embeddings:
            continue
        w = tensor.float().numpy()
        if permuted and ".q_proj." in hf:
            w = permute(w, arch.num_heads)
        elif permuted and ".k_proj." in hf:
            w = permute(w, arch.num_kv_heads)
        yield gguf_name(hf), w


def _pre_name(backend: RustTokenizer) -> str:
    mine = json.loads(backend.to_str())["pre_tokenizer"]
    for name in _PRE_NAMES:
        probe = RustTokenizer(models.BPE())
        probe.pre_tokenizer = _pre_tokenizer(name)
        if json.loads(probe.to_str())["pre_tokenizer"] == mine:
            return name
    raise ConfigError(
        "GGUF export supports byte-level BPE tokenizers with the GPT-2, Llama 3, Qwen2 or "
        "SmolLM pre-tokenizer; this model's is none of them.",
        setting="model",
    )


def _add_tokenizer(writer: GGUFWriter, arch: ArchConfig, tokenizer) -> None:
    backend: RustTokenizer = tokenizer.backend
    spec = json.loads(backend.to_str())
    if spec["model"]["type"] != "BPE":
        raise ConfigError("GGUF export needs a BPE tokenizer.", setting="model")
    vocab = backend.get_vocab(with_added_tokens=True)
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    types = [_NORMAL] * len(tokens)
    for i, added in backend.get_added_tokens_decoder().items():
        types[i] = _CONTROL if added.special else _USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_name(backend))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    if tokenizer.bos_token_id is not None:
        writer.add_bos_token_id(tokenizer.bos_token_id)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else arch.eos_token_ids[0]
    writer.add_eos_token_id(eos)
    others = [e for e in arch.eos_token_ids if e != eos]
    if others:
        writer.add_eot_token_id(others[0])
    writer.add_add_bos_token(tokenizer.add_bos)
    if tokenizer.chat_template is not None:
        writer.add_chat_template(tokenizer.chat_template)


def write_gguf(
    path: Path, arch: ArchConfig, tokenizer, state: dict[str, torch.Tensor], kind: str
) -> dict[str, int]:
    """Writes the model as one GGUF file of `kind` ("q8_0" or "q4_k"). Returns how many
    tensors got each storage type."""
    if arch.layer_num_heads or arch.layer_intermediate_sizes:
        raise ConfigError(
            "GGUF export of per-layer shapes (a pruned model) is not "
            "supported; export before pruning heads or channels."
        )
    if arch.rope_scaling is not None:
        raise ConfigError("GGUF export of RoPE scaling is not supported yet.")
    writer = GGUFWriter(str(path), arch.architecture)
    writer.add_name(path.parent.name)
    writer.add_file_type(
        LlamaFileType.MOSTLY_Q8_0 if kind == "q8_0" else LlamaFileType.MOSTLY_Q4_K_M
    )
    writer.add_quantization_version(2)
    writer.add_block_count(arch.num_layers)
    writer.add_context_length(arch.max_position_embeddings)
    writer.add_embedding_length(arch.hidden_size)
    writer.add_feed_forward_length(arch.intermediate_size)
    writer.add_head_count(arch.num_heads)
    writer.add_head_count_kv(arch.num_kv_heads)
    writer.add_key_length(arch.head_dim)
    writer.add_value_length(arch.head_dim)
    writer.add_rope_dimension_count(arch.head_dim)
    writer.add_rope_freq_base(arch.rope_theta)
    writer.add_layer_norm_rms_eps(arch.rms_norm_eps)
    writer.add_vocab_size(arch.vocab_size)
    _add_tokenizer(writer, arch, tokenizer)
    counts: dict[str, int] = {}
    for name, w in gguf_tensors(arch, state):
        qtype = tensor_type(name, w.shape, kind)
        counts[qtype.name] = counts.get(qtype.name, 0) + 1
        data = encode(w, qtype)
        writer.add_tensor(name, data, raw_dtype=None if qtype == Q.F32 else qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return counts


def error_bound(w: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Per 32-weight block of w (rows, cols), the largest dequantization error the
    format allows: half a Q8_0 step (plus float16 scale rounding); for Q5_0 and Q4_K
    one 4-bit step of the block's range plus the super-block's 6-bit scale step. The
    constant term covers scales below float16's normal range (blocks of near-zeros)."""
    blocks = w.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    tiny = 1e-5
    if qtype == Q.Q8_0:
        return amax / 254.0 + amax / 1024.0 + tiny
    span = blocks.max(axis=1) - np.minimum(blocks.min(axis=1), 0)
    if qtype == Q.Q4_K:
        sup = span.reshape(-1, 8).max(axis=1).repeat(8)
        return span / 15.0 + 2 * sup / (15.0 * 63.0) + tiny
    return span / 15.0 + tiny


def verify(path: Path, arch: ArchConfig, state: dict[str, torch.Tensor]) -> dict[str, dict]:
    """Reads `path` back with gguf's reader and checks every tensor against the float
    weights it came from, block by block, within `error_bound`. Returns per storage
    type: tensors checked, the worst error as a fraction of its bound and the relative
    RMS error. Raises AssertionError naming a tensor that exceeds its bound."""
    reader = GGUFReader(str(path))
    expected = dict(gguf_tensors(arch, state))
    stats: dict[str, dict] = {}
    for t in reader.tensors:
        want = expected.pop(t.name)
        got = dequantize(t.data, t.tensor_type).reshape(want.shape)
        err = np.abs(got - want)
        s = stats.setdefault(
            t.tensor_type.name,
            {"tensors": 0, "worst_error_over_bound": 0.0, "sq_err": 0.0, "sq": 0.0},
        )
        s["tensors"] += 1
        s["sq_err"] += float((err.astype(np.float64) ** 2).sum())
        s["sq"] += float((want.astype(np.float64) ** 2).sum())
        if t.tensor_type != Q.F32:
            ratio = float(
                (err.reshape(-1, 32).max(axis=1) / error_bound(want, t.tensor_type)).max()
            )
            s["worst_error_over_bound"] = max(s["worst_error_over_bound"], ratio)
            if ratio > 1.0:
                raise AssertionError(f"{t.name}: error {ratio:.2f}x the {t.tensor_type.name} bound")
        elif err.max() != 0:
            raise AssertionError(f"{t.name}: float32 tensor changed on the way")
    if expected:
        raise AssertionError(f"tensors missing from {path}: {sorted(expected)}")
    return {
        k: {
            "tensors": v["tensors"],
            "worst_error_over_bound": round(v["worst_error_over_bound"], 3),
            "relative_rms_error": (v["sq_err"] / max(v["sq"], 1e-30)) ** 0.5,
        }
        for k, v in stats.items()
    }
