"""`tokenmill optimize quantize`: int8 (SmoothQuant W8A8), int4 (GPTQ) and GGUF exports.

Each method takes the float model and returns the state to write, the
quantization_config that tells the loader how to read it, and its own findings.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from tokenmill.model.loader import LoadedModel
from tokenmill.model.quant import int4
from tokenmill.model.quant.int8 import INT8_METHOD
from tokenmill.optimize import data
from tokenmill.optimize.calibration import channel_absmax, hessians, projections, token_windows
from tokenmill.optimize.checkpoint import float_state
from tokenmill.optimize.forward import forward_logits
from tokenmill.optimize.gptq import gptq, output_error, rtn
from tokenmill.optimize.smoothquant import smoothquant_int8

QUANT_METHODS = ("int8", "int4", "gguf-q8_0", "gguf-q4_k")


@dataclass
class QuantizeSettings:
    """Options of `tokenmill optimize quantize`."""

    method: str
    group_size: int = 128
    """int4: columns per (scale, min) group, 32 or 128."""
    alpha: float = 0.5
    """int8: SmoothQuant migration strength (0 = no smoothing)."""
    calib_tokens: int = 1024
    calib_seq_len: int = 512

    def __post_init__(self) -> None:
        if self.method not in QUANT_METHODS:
            raise ValueError(f"--method must be one of {QUANT_METHODS}, got {self.method!r}")
        if self.group_size not in int4.GROUP_SIZES:
            raise ValueError(f"--group-size must be one of {int4.GROUP_SIZES}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("--alpha must be in [0, 1]")
        if self.calib_tokens < 16 or self.calib_seq_len < 16:
            raise ValueError("--calib-tokens and the window length must be at least 16")


@dataclass
class Quantized:
    """What a method produced: the state to write and its loader config."""

    state: dict[str, torch.Tensor]
    quantization_config: dict[str, Any] | None
    details: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def heldout_perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Perplexity of the held-out tokens in whole-sequence passes outside the engine (one
    pass per window of the model's RoPE length; the held-out text fits one for SmolLM2)."""
    span = model.rotary.max_positions
    nll, count = 0.0, 0
    for window in ids.split(span):
        if window.numel() < 2:
            continue
        logits = forward_logits(model, [window])
        lp = torch.log_softmax(logits[:-1], dim=-1).gather(1, window[1:, None])
        nll, count = nll - float(lp.sum()), count + window.numel() - 1
    return math.exp(nll / count)


def _calibration(loaded: LoadedModel, s: QuantizeSettings) -> list[torch.Tensor]:
    return token_windows(
        loaded.tokenizer, [data.calibration_text()], s.calib_tokens, s.calib_seq_len
    )


def _half_embedding(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The embedding table is the largest float tensor left; float16 halves it on disk
    # and the loader widens it back to the serving dtype.
    state["embed_tokens.weight"] = state["embed_tokens.weight"].half()
    return state


def quantize_int8(loaded: LoadedModel, s: QuantizeSettings) -> Quantized:
    """SmoothQuant with `s.alpha`, then per-channel int8 weights for every projection
    and the output head. Also measures plain int8 (alpha 0) for the report."""
    windows = _calibration(loaded, s)
    act_max = channel_absmax(loaded.model, windows)
    ids = torch.tensor(loaded.tokenizer.encode(data.heldout_text()))
    plain = copy.deepcopy(loaded.model)
    smoothquant_int8(plain, act_max, 0.0)
    ppl_plain = heldout_perplexity(plain, ids)
    del plain
    ppl_float = heldout_perplexity(loaded.model, ids)
    model = loaded.model
    smoothquant_int8(model, act_max, s.alpha)
    ppl_smooth = heldout_perplexity(model, ids)
    details = {
        "smoothing": {
            "float32": {"perplexity": ppl_float},
            "int8 without smoothing": {"perplexity": ppl_plain},
            f"int8 SmoothQuant alpha={s.alpha}": {"perplexity": ppl_smooth},
        },
        "calibration": f"{len(windows)} windows, {s.calib_tokens} tokens of calibration.txt",
    }
    config = {
        "quant_method": INT8_METHOD,
        "bits": 8,
        "weights": "per-output-channel symmetric",
        "activations": "per-row dynamic symmetric",
        "smoothquant_alpha": s.alpha,
    }
    return Quantized(_half_embedding(float_state(model)), config, details)


def quantize_int4(loaded: LoadedModel, s: QuantizeSettings) -> Quantized:
    """GPTQ int4 of every decoder projection (the tied embedding / output head stays
    float16 on disk). Measures round-to-nearest on the same groups for the report.
    ValueError, before any calibration, when the group size does not divide a
    projection's input width (SmolLM2's 576-wide rows take 32, not 128)."""
    ragged = sorted(
        {
            lin.weight.shape[1]
            for lin in projections(loaded.model).values()
            if lin.weight.shape[1] % s.group_size
        }
    )
    if ragged:
        fits = [g for g in int4.GROUP_SIZES if all(w % g == 0 for w in ragged)]
        raise ValueError(
            f"--group-size {s.group_size} does not divide this model's projection input "
            f"widths {', '.join(map(str, ragged))}"
            + (f"; use --group-size {fits[0]}" if fits else "")
            + "."
        )
    windows = _calibration(loaded, s)
    model = loaded.model
    h = hessians(model, windows)
    ids = torch.tensor(loaded.tokenizer.encode(data.heldout_text()))
    ppl_float = heldout_perplexity(model, ids)
    originals = {name: lin.weight.detach().clone() for name, lin in projections(model).items()}
    err = {"rtn": 0.0, "gptq": 0.0}
    packed: dict[str, dict[str, torch.Tensor]] = {}
    rtn_weights: dict[str, torch.Tensor] = {}
    for name, lin in projections(model).items():
        w = originals[name]
        r = rtn(w, s.group_size).dequantize(s.group_size)
        g = gptq(w, h[name], s.group_size)
        gw = g.dequantize(s.group_size)
        err["rtn"] += output_error(w, r, h[name])
        err["gptq"] += output_error(w, gw, h[name])
        rtn_weights[name] = r
        packed[name] = g.packed()
        lin.weight.copy_(gw)
    ppl_gptq = heldout_perplexity(model, ids)
    for name, lin in projections(model).items():
        lin.weight.copy_(rtn_weights[name])
    ppl_rtn = heldout_perplexity(model, ids)
    details = {
        "round-to-nearest vs GPTQ": {
            "float32": {"perplexity": ppl_float, "output_error": 0.0},
            "int4 round-to-nearest": {"perplexity": ppl_rtn, "output_error": err["rtn"]},
            "int4 GPTQ": {"perplexity": ppl_gptq, "output_error": err["gptq"]},
        },
        "output_error": "sum over projections of trace((W-Q) H (W-Q)^T) / rows, "
        "H = mean X^T X on the calibration windows",
        "calibration": f"{len(windows)} windows, {s.calib_tokens} tokens of calibration.txt",
    }
    state = float_state(model)
    for name, leaves in packed.items():
        del state[f"{name}.weight"]
        for leaf, tensor in leaves.items():
            state[f"{name}.{leaf}"] = tensor
    config = {
        "quant_method": int4.INT4_METHOD,
        "bits": 4,
        "group_size": s.group_size,
        "symmetric": False,
        "algorithm": "gptq",
    }
    return Quantized(_half_embedding(state), config, details)
