"""Sentence-embedding speed: batch 1 against batched, and the cost of one prompt.

On tokenmill's all-MiniLM-L6-v2 (float32, CPU), over `--sentences` English chat
prompts from benchmarks/data/drift/english_chat.txt:

- encoder, batch 1: each sentence its own `SentenceEncoder.embed` call;
- encoder, batched: all sentences in one call (padded micro-batches of 64);
- service, sequential: one `await EmbeddingService.embed([s])` after another (batch 1,
  plus the hand-off to the worker thread);
- service, concurrent: every sentence its own caller, all at once (the service batches
  them across callers);
- sentence-transformers `encode`, batch 1 and batched, for reference (if installed).

Variants run interleaved (A, B, C, ... repeated `--rounds` times) so a busy machine
slows them alike; medians are reported. Then the latency of embedding one prompt
(what the semantic cache and drift detection add per request): a typical chat prompt
and a 256-word-piece one, through the encoder and through the service.

    .venv/bin/python benchmarks/embedding_throughput.py [--sentences 128] [--rounds 5]
        [--threads 1] [--out docs/embeddings.md]

Besides wall-clock speed it reports speed per CPU-second of the process (all threads),
which a busy machine disturbs far less than wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import drift_prompts
import numpy as np

from tokenmill.config import EmbeddingConfig
from tokenmill.engine.embedding import EmbeddingService
from tokenmill.model.encoders import PACKAGED_ENCODERS, SentenceEncoder

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process, all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sentences", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "embeddings.json")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "embeddings.md")
    args = parser.parse_args()
    import torch  # after tokenmill, which sets OMP_WAIT_POLICY before torch loads

    if args.threads:
        torch.set_num_threads(args.threads)

    sentences = drift_prompts.load("english")[: args.sentences]
    encoder = SentenceEncoder.load()
    service = EmbeddingService(encoder, EmbeddingConfig())
    service.start()
    loop = asyncio.new_event_loop()

    async def sequential() -> None:
        for s in sentences:
            await service.embed([s])

    async def concurrent() -> None:
        await asyncio.gather(*(service.embed([s]) for s in sentences))

    variants: dict[str, Callable[[], object]] = {
        "encoder, batch 1": lambda: [encoder.embed([s]) for s in sentences],
        "encoder, batched": lambda: encoder.embed(sentences),
        "service, sequential callers": lambda: loop.run_until_complete(sequential()),
        "service, concurrent callers": lambda: loop.run_until_complete(concurrent()),
    }
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(PACKAGED_ENCODERS["all-minilm-l6-v2"].find()), device="cpu")
        variants["sentence-transformers, batch 1"] = lambda: [
            st.encode([s], show_progress_bar=False) for s in sentences
        ]
        variants["sentence-transformers, batched"] = lambda: st.encode(
            sentences, batch_size=64, show_progress_bar=False
        )
    except ImportError:
        pass

    for fn in variants.values():  # warm-up
        fn()
    passes_before = service.stats().num_passes
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    passes = service.stats().num_passes - passes_before
    throughput = {
        k: {
            "wall": len(sentences) / statistics.median(w for w, _ in v),
            "cpu": len(sentences) / statistics.median(c for _, c in v),
        }
        for k, v in times.items()
    }

    typical = sentences[0]
    long_text = "word " * 254  # 254 pieces + [CLS] + [SEP] = the model's limit
    assert encoder.embed([long_text]).num_tokens == [256]
    latency_cases = {
        f"encoder, one chat prompt ({encoder.embed([typical]).num_tokens[0]} pieces)": lambda: (
            encoder.embed([typical])
        ),
        "encoder, one 256-piece prompt": lambda: encoder.embed([long_text]),
        "service (sync API), one chat prompt": lambda: service.embed_sync([typical]),
        "service (async API), one chat prompt": lambda: loop.run_until_complete(
            service.embed([typical])
        ),
    }
    lat: dict[str, list[tuple[float, float]]] = {k: [] for k in latency_cases}
    for _ in range(args.latency_calls):
        for name, fn in latency_cases.items():
            lat[name].append(timed(fn))
    service.close()
    loop.close()

    results = {
        "settings": {
            "sentences": len(sentences),
            "rounds": args.rounds,
            "latency_calls": args.latency_calls,
            "torch_threads": torch.get_num_threads(),
            "load_avg": os.getloadavg()[0],
            "mean_pieces": float(np.mean(encoder.embed(sentences).num_tokens)),
        },
        "throughput": throughput,
        "latency_ms": {
            k: {
                "wall_median": 1000 * statistics.median(w for w, _ in v),
                "wall_p90": 1000 * float(np.percentile([w for w, _ in v], 90)),
                "cpu_median": 1000 * statistics.median(c for _, c in v),
            }
            for k, v in lat.items()
        },
        "service_passes_during_throughput": passes,
    }
    args.json.write_text(json.dumps(results, indent=1))
    args.out.write_text(render(results))
    print(render(results))


def render(res: dict) -> str:
    s = res["settings"]
    base = res["throughput"]["encoder, batch 1"]["cpu"]
    lines = [
        "# Sentence embeddings: throughput and per-prompt cost",
        "",
        (
            "Written by `benchmarks/embedding_throughput.py` (`.venv/bin/python "
            f"benchmarks/embedding_throughput.py --sentences {s['sentences']} --rounds "
            f"{s['rounds']} --threads {s['torch_threads']}`). Model: all-MiniLM-L6-v2 "
            f"(tokenmill's own BERT code, float32, CPU, {s['torch_threads']} torch "
            f"thread(s)); {s['sentences']} English chat prompts of "
            f"{s['mean_pieces']:.1f} word pieces on average. Variants run interleaved; "
            f"medians of {s['rounds']} rounds."
        ),
        "",
        (
            "The machine was shared (load average "
            f"{s['load_avg']:.1f} on 2 cores), so wall-clock speed mostly measures the "
            "competition. The first column divides by the CPU time the process itself used "
            "(all its threads), which the competition barely changes: with one compute "
            "thread it is what one idle core would do."
        ),
        "",
        "| variant | sentences per CPU-second | vs encoder batch 1 | sentences/s wall |",
        "| --- | --- | --- | --- |",
    ]
    for name, value in res["throughput"].items():
        lines.append(
            f"| {name} | {value['cpu']:.0f} | {value['cpu'] / base:.1f}x | {value['wall']:.0f} |"
        )
    lines += [
        "",
        (
            "Concurrent callers each send one sentence; the service's worker takes whatever "
            "queued during its previous pass into the next one, so they share forward passes "
            "without any waiting timer."
        ),
        "",
        "## Added latency of embedding one prompt",
        "",
        (
            "What the semantic cache and drift detection add to each request (each embeds "
            f"the prompt once), over {s['latency_calls']} calls. CPU ms is the idle-core "
            "estimate; wall ms is what this busy machine gave."
        ),
        "",
        "| case | CPU ms (median) | wall ms (median) | wall ms (p90) |",
        "| --- | --- | --- | --- |",
    ]
    for name, v in res["latency_ms"].items():
        lines.append(
            f"| {name} | {v['cpu_median']:.1f} | {v['wall_median']:.1f} | {v['wall_p90']:.1f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
