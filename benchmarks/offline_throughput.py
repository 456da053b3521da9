"""Offline throughput and prefill speed: tokenmill's `LLM.generate` beside transformers.

Measures, on the embedded default model (SmolLM2-135M GGUF, dequantized) in one run:

- offline throughput, output tokens/s: B prompts of `--prompt-len` random token ids each
  generate exactly `--new-tokens` greedy tokens (EOS ignored); time from submitting the
  batch to its last token, so prefill is included. tokenmill batches continuously;
  transformers `generate` runs the B prompts as one left-padded static batch.
- prefill tokens/s: one `--prefill-len` prompt; tokenmill generates 1 token with prefix
  caching off (each repeat recomputes, checked on the engine's counters), transformers
  runs one forward pass. Mean over `--prefill-repeats` repeats.

tokenmill variants: float32, int8 (W8A8 per-row) and bfloat16 (emulated, slow, on CPUs
without AVX512-BF16). transformers runs float32, and bfloat16 when that variant is chosen.
Each engine is warmed up once before timing. Prints a markdown table; writes JSON.

    .venv/bin/python benchmarks/offline_throughput.py [--batch-sizes 1,8,32,64]
        [--variants float32,int8,bfloat16] [--skip-hf] [--threads N]
        [--out docs/offline_throughput.json] [--markdown docs/offline_throughput.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import torch

from tokenmill import LLM, SamplingParams
from tokenmill.bench.tokenizer import smollm2_gguf_path

FIRST_ORDINARY_ID = 17  # SmolLM2's ids below 17 are special tokens
VOCAB = 49152  # SmolLM2's vocabulary; both engines read the same GGUF
VARIANTS = {
    "float32": {"dtype": "float32"},
    "int8": {"dtype": "float32", "quantization": "int8"},
    "bfloat16": {"dtype": "bfloat16"},
}


def make_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """`n` prompts of `length` random ordinary token ids, the same for a given seed."""
    rng = random.Random(seed)
    return [[rng.randrange(FIRST_ORDINARY_ID, vocab) for _ in range(length)] for _ in range(n)]


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bench_tokenmill(variant: str, args, prompts, prefill_prompt) -> dict:
    """Throughput per batch size and prefill tokens/s for one tokenmill variant."""
    llm = LLM(
        num_threads=args.threads,
        kv_cache_memory_gib=args.kv_cache_gib,
        enable_prefix_caching=False,
        max_num_seqs=max(64, *args.batch_sizes),
        max_num_batched_tokens=max(512, args.prefill_len, *args.batch_sizes),
        **VARIANTS[variant],
    )
    assert llm.engine.loaded.arch.vocab_size == VOCAB, "prompt ids assume SmolLM2's vocabulary"
    greedy = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    throughput = {}
    for b in args.batch_sizes:
        start = time.perf_counter()
        outs = llm.generate(prompts[:b], greedy)
        elapsed = time.perf_counter() - start
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        assert tokens == b * args.new_tokens, f"expected {b * args.new_tokens}, got {tokens}"
        throughput[b] = tokens / elapsed
        print(f"  tokenmill {variant} batch {b}: {throughput[b]:.1f} tok/s", flush=True)
    one = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    computed = llm.stats().prompt_tokens_computed
    start = time.perf_counter()
    for _ in range(args.prefill_repeats):
        llm.generate([prefill_prompt], one)
    elapsed = (time.perf_counter() - start) / args.prefill_repeats
    recomputed = llm.stats().prompt_tokens_computed - computed
    assert recomputed == args.prefill_len * args.prefill_repeats, "prefill was not recomputed"
    print(f"  tokenmill {variant} prefill: {args.prefill_len / elapsed:.1f} tok/s", flush=True)
    return {"throughput": throughput, "prefill": args.prefill_len / elapsed}


def bench_hf(model, dtype: str, args, prompts, prefill_prompt, pad_id: int) -> dict:
    """The same figures for transformers `generate` with static, left-padded batches."""
    model = model.to(getattr(torch, dtype))

    def generate(batch: list[list[int]], new_tokens: int) -> int:
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            pad_token_id=pad_id,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
        )
        return (out.shape[1] - width) * len(batch)

    throughput = {}
    with torch.inference_mode():
        generate(prompts[:2], 4)
        for b in args.batch_sizes:
            start = time.perf_counter()
            tokens = generate(prompts[:b], args.new_tokens)
            throughput[b] = tokens / (time.perf_counter() - start)
            print(f"  transformers {dtype} batch {b}: {throughput[b]:.1f} tok/s", flush=True)
        ids = torch.tensor([prefill_prompt])
        start = time.perf_counter()
        for _ in range(args.prefill_repeats):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        elapsed = (time.perf_counter() - start) / args.prefill_repeats
    print(f"  transformers {dtype} prefill: {args.prefill_len / elapsed:.1f} tok/s", flush=True)
    return {"throughput": throughput, "prefill": args.prefill_len / elapsed}


def load_hf():
    """transformers' Llama on the same GGUF tokenmill serves, dequantized to float32."""
    from transformers import AutoModelForCausalLM

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    pad = model.generation_config.pad_token_id
    eos = model.generation_config.eos_token_id
    pad = pad if pad is not None else (eos[0] if isinstance(eos, list) else eos)
    return model, pad


def markdown(rows: list[dict], batch_sizes: list[int], args) -> str:
    head = [f"batch {b} (tok/s)" for b in batch_sizes] + [f"prefill {args.prefill_len} (tok/s)"]
    caption = (
        f"Output tokens/s, {args.prompt_len}-token prompts, {args.new_tokens} new tokens "
        f"(greedy, EOS ignored); prefill tokens/s for one {args.prefill_len}-token prompt."
    )
    lines = [
        caption,
        "",
        "| engine | variant | " + " | ".join(head) + " |",
        "|---|---|" + "---:|" * len(head),
    ]
    for r in rows:
        cells = [f"{r['throughput'][b]:.1f}" for b in batch_sizes] + [f"{r['prefill']:.1f}"]
        lines.append(f"| {r['engine']} | {r['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ints = lambda s: [int(x) for x in s.split(",")]
    ap.add_argument("--batch-sizes", type=ints, default=[1, 8, 32, 64])
    ap.add_argument("--prompt-len", type=int, default=100)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--prefill-repeats", type=int, default=3)
    ap.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    ap.add_argument("--skip-hf", action="store_true", help="measure tokenmill only")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/offline_throughput.json")
    ap.add_argument("--markdown", default=None, help="also write the table here")
    args = ap.parse_args()
    if unknown := set(args.variants) - set(VARIANTS):
        ap.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = load_avg()
    print(f"torch threads {torch.get_num_threads()}, load average {load_start}", flush=True)

    prompts = make_prompts(max(args.batch_sizes), args.prompt_len, VOCAB, args.seed)
    prefill_prompt = make_prompts(1, args.prefill_len, VOCAB, args.seed + 1)[0]
    rows = []
    for variant in args.variants:
        fig = bench_tokenmill(variant, args, prompts, prefill_prompt)
        rows.append({"engine": "tokenmill", "variant": variant, **fig})
    if not args.skip_hf:
        model, pad = load_hf()
        assert model.config.vocab_size == VOCAB, "prompt ids assume SmolLM2's vocabulary"
        for dtype in ["float32"] + (["bfloat16"] if "bfloat16" in args.variants else []):
            fig = bench_hf(model, dtype, args, prompts, prefill_prompt, pad)
            rows.append({"engine": "transformers", "variant": dtype, **fig})

    load_end = load_avg()
    table = markdown(rows, args.batch_sizes, args)
    footer = (
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}; "
        f"load average {load_start} at start, {load_end} at end."
    )
    print("\n" + table + "\n" + footer)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "markdown")},
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average": {"start": load_start, "end": load_end},
        "results": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n" + footer + "\n")
    print(f"wrote {args.out}" + (f" and {args.markdown}" if args.markdown else ""))


if __name__ == "__main__":
    main()
