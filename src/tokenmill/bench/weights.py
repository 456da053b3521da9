"""How many bytes of weights one batch-1 decode step of a tokenmill configuration reads.

The batch-1 decode bound is memory bandwidth over these bytes. They are counted from the
model tokenmill actually loads with the same serve flags (dtype, quantization), so the
bound follows whatever weight format a configuration uses. A step reads every persistent
weight once, except the input embedding table, of which it gathers one row; when the
output head is tied to that table, the head reads the whole table and it counts once.
Non-persistent buffers (the RoPE cos/sin tables) are indexed by position, not streamed.

Run as `python -m tokenmill.bench.weights [serve flags]`: prints one JSON object, so the
model is loaded in a throwaway process, not in the load generator.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from tokenmill.bench.record import WeightsRead


def decode_bytes(model) -> tuple[int, str]:
    """(bytes read per decode step, how the weights are held) for a loaded module."""
    import torch

    state = model.state_dict(keep_vars=True)
    embed = getattr(getattr(model, "embed_tokens", None), "weight", None)
    tied = getattr(model, "lm_head", "absent") is None
    seen: set[int] = set()
    total = 0
    dtypes: dict[str, int] = {}
    for tensor in state.values():
        if not isinstance(tensor, torch.Tensor) or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        if embed is not None and tensor.data_ptr() == embed.data_ptr() and not tied:
            continue
        total += tensor.nbytes
        key = str(tensor.dtype).removeprefix("torch.")
        dtypes[key] = dtypes.get(key, 0) + tensor.nbytes
    # GGUF block matrices are not parameters: count each BlockLinear's bytes (a tied
    # head's BlockLinear shares the embedding's blocks, so they count once, read whole).
    # A BlockEmbedding only gathers rows and is not counted on its own.
    from tokenmill.model.quant.blocks import BlockLinear

    for module in model.modules():
        if not isinstance(module, BlockLinear):
            continue
        for part in module.parts:
            if part.data.data_ptr() in seen:
                continue
            seen.add(part.data.data_ptr())
            total += part.data.nbytes
            key = f"GGUF {part.type_name}"
            dtypes[key] = dtypes.get(key, 0) + part.data.nbytes
    mix = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sorted(dtypes.items(), key=lambda i: -i[1]))
    blocks = getattr(getattr(model, "embed_tokens", None), "weight_blocks", None)
    head_parts = getattr(getattr(model, "lm_head", None), "parts", ())
    if blocks is not None and any(p.data.data_ptr() == blocks.data.data_ptr() for p in head_parts):
        tied = True
    head = "tied head reads the embedding table" if tied else "embedding table gathered, not read"
    return total, f"{mix}; {head}"


def main(argv: list[str] | None = None) -> int:
    """Load the model with the given serve flags and print {"bytes", "description"}."""
    from tokenmill.model.loader import load_model

    parser = argparse.ArgumentParser(prog="python -m tokenmill.bench.weights")
    parser.add_argument("--model")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quantization", default="none")
    args, _ = parser.parse_known_args(argv)
    quant = None if args.quantization == "none" else args.quantization
    loaded = load_model(args.model, args.dtype, None, quant)
    nbytes, description = decode_bytes(loaded.model)
    print(json.dumps({"bytes": nbytes, "description": description}))
    return 0


def measure_weights(serve_args: list[str], timeout_s: float = 600.0) -> WeightsRead:
    """Run this module in a subprocess for `serve_args`; raises RuntimeError on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "tokenmill.bench.weights", *serve_args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"weights probe failed ({done.returncode}): {done.stderr[-800:]}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return WeightsRead(bytes=int(data["bytes"]), description=str(data["description"]))


if __name__ == "__main__":
    sys.exit(main())
