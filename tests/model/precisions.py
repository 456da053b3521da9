"""The precisions the engine serves a model in, each with the tolerance its parity
against transformers' float32 needs. Parity tests parametrize over PRECISIONS: a new
compute path is one more line here, with tolerances measured as the comments say."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenmill.model.loader import LoadedModel, load_model

BLOCKS = "gguf-blocks"
"""The precision whose `kernel_path` must start so: a machine without the native kernels
serves "auto" otherwise, and skips it (tests/model/test_no_compiler.py covers that)."""


@dataclass(frozen=True)
class Precision:
    """One way to run a model: what `load_model` is given and the KV cache dtype the
    engine pairs with it when `CacheConfig.dtype` is "auto" (EngineCore._kv_dtype)."""

    name: str
    load: dict[str, object] = field(hash=False)
    """Keyword arguments for `load_model` (dtype, quantization)."""
    kv_dtype: torch.dtype
    logit_atol: float
    """Largest |ours - transformers float32| allowed on any logit of any compared row
    (SmolLM2's logits reach ~38 in magnitude)."""
    min_top1: float
    """Share of compared rows whose argmax must equal transformers' (teacher-forced)."""
    min_greedy: float
    """Share of transformers' greedy tokens reproduced: per prompt, the tokens before
    the first difference, summed, over the reference's tokens."""

    def load_model(self, model: str | None = None, **kwargs) -> LoadedModel:
        return load_model(model, **self.load, **kwargs)


# Measured on this repository's CPU (AMD EPYC Zen 3, AVX2, no AVX512-BF16 or VNNI) by
# tests/model/test_smollm_parity.py: max |diff| on the prefill (38 rows), chunked prefill
# (38 rows) and teacher-forced decode (209 rows over 8 prompts) paths; argmax agreement
# on the same rows; free-running greedy agreement over 8 prompts x 32 tokens (209).
# Margins: logit_atol 1.5x to 3x the worst measured row; the agreement rates, the lowest
# measured less one prompt's worth (1/8 of the rows; for free-running greedy, the most
# tokens one prompt contributed), so one prompt flipping on another CPU is allowed.
PRECISIONS = [
    # float32 weights, activations and K/V: summation order is the only difference from
    # transformers. Measured max |diff| 6.1e-5 / 1.1e-4 / 6.0e-5; 3e-4 catches any real
    # defect (a wrong RoPE row order or a missed bias moves logits by whole units). No
    # margin on agreement: a 1e-4 noise flips no argmax here, every greedy token matches.
    Precision("float32", {"dtype": "float32"}, torch.float32, 3e-4, 1.0, 1.0),
    # The default where the native kernels build: the GGUF's own Q4_1 / Q8_0 blocks,
    # decoded in registers, float32 activations, accumulation and K/V. The same numbers
    # as dequantized float32 up to summation order, so float32's bounds apply. Measured
    # max |diff| 1.0e-4 / 1.1e-4 / 9.0e-5; argmax 1.0; every greedy token matches.
    Precision(BLOCKS, {"dtype": "auto"}, torch.float32, 3e-4, 1.0, 1.0),
    # bfloat16 weights, activations and K/V. Tested on every CPU, as `--dtype bfloat16`
    # is accepted on every CPU: without AVX512-BF16 it is emulated (slower, not
    # different: both paths round inputs to bfloat16 and accumulate in float32). 8-bit
    # mantissas through 30 layers: measured max |diff| 1.34 / 1.20 / 0.96 (mean 0.12-0.17)
    # on logits up to 38; argmax 1.0 / 1.0 / 0.986; free-running greedy 0.799 (167 of 209;
    # the prompts contribute at most 32 each).
    Precision("bfloat16", {"dtype": "bfloat16"}, torch.bfloat16, 2.0, 0.86, 0.64),
    # int8 weights with per-row int8 activations (W8A8), bfloat16 K/V. Lossy by design:
    # a row's activation outliers set its quantization step. Measured max |diff| 5.8 /
    # 6.6 / 6.6 (mean 0.67-0.93); argmax 0.816 / 0.895 / 0.857 (179 of 209 greedy
    # choices kept when fed float32's tokens). Free running, an early flip on a near-tie
    # sends the rest elsewhere: 0.134 (28 of 209; at most 8 from one prompt), identical
    # continuations for 1 prompt of 8. A wrong scale or dropped bias moves logits by tens.
    # With the native fused norm / SiLU / RoPE kernels (float32 activations, another
    # summation order): max |diff| 6.8 / 5.8 / 8.0, argmax 0.868 / 0.895 / 0.842, greedy
    # 0.115 (24 of 209), within the same bounds. With the native prefill attention
    # (2026-12-03; it agrees with ATen's to ~1e-6): argmax unchanged in bounds, greedy
    # 0.1005 (21 of 209) where ATen's gave 0.2057 (43) on the same build: the first
    # tokens are near ties that float32-level differences flip either way.
    Precision("int8", {"quantization": "int8"}, torch.bfloat16, 10.0, 0.69, 0.09),
]
