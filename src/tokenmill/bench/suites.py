"""The request sets of a comparison, built once before any peer starts.

Two suites: "throughput" (closed-loop levels at each concurrency, one workload) and "ttft"
(one stream, a prompt length per level). Every repeat of every level sends its own
prompts, so no server's prompt cache turns an earlier repeat into free hits; every peer
receives exactly the same requests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tokenmill.bench.load import LoadLevel
from tokenmill.bench.record import THROUGHPUT, TTFT
from tokenmill.bench.serve import WorkloadConfig
from tokenmill.bench.tokenizer import PromptTokenizer
from tokenmill.bench.workload import BenchRequest

SEED_STRIDE = 1_000_003
"""Seeds of the ttft suite's lengths are this far apart, so a shorter prompt is never the
prefix of a longer one (one seed would draw the same leading tokens)."""


@dataclass(frozen=True)
class Suite:
    """One suite's requests."""

    name: str
    keys: tuple[int, ...]
    """Concurrencies (throughput) or prompt lengths (ttft), in run order."""
    warm_up: BenchRequest
    requests: dict[tuple[int, int], list[BenchRequest]]
    """(key, repeat) -> the requests of that repeat."""
    description: dict

    def concurrency(self, key: int) -> int:
        """Streams in flight at level `key`."""
        return key if self.name == THROUGHPUT else 1

    @property
    def max_concurrency(self) -> int:
        """The most streams any level runs."""
        return max(self.concurrency(k) for k in self.keys)

    @property
    def max_tokens_per_request(self) -> int:
        """The longest prompt plus output of any request (a server's per-slot context)."""
        every = [self.warm_up, *(r for reqs in self.requests.values() for r in reqs)]
        return max(r.prompt_len + r.output_len for r in every)


def throughput_suite(
    tokenizer: PromptTokenizer, workload: WorkloadConfig, concurrency: tuple[int, ...], repeats: int
) -> Suite:
    """Each concurrency `repeats` times, each repeat with the workload's count of prompts."""
    levels = [LoadLevel(concurrency=c) for c in concurrency for _ in range(repeats)]
    built = workload.build(tokenizer, levels)
    requests = {
        (c, r): built.levels[i * repeats + r]
        for i, c in enumerate(concurrency)
        for r in range(repeats)
    }
    return Suite(THROUGHPUT, tuple(concurrency), built.warm_up, requests, workload.describe())


def ttft_suite(
    tokenizer: PromptTokenizer,
    prompt_lens: tuple[int, ...],
    per_repeat: int,
    output_len: int,
    repeats: int,
    seed: int = 0,
) -> Suite:
    """One stream; `per_repeat` prompts of each length a repeat, `output_len` tokens each."""
    requests: dict[tuple[int, int], list[BenchRequest]] = {}
    warm: BenchRequest | None = None
    base = WorkloadConfig(output_len=output_len, num_prompts=per_repeat)
    for length in prompt_lens:
        cfg = replace(base, input_len=length, seed=seed + SEED_STRIDE * length)
        built = cfg.build(tokenizer, [LoadLevel(concurrency=1)] * repeats)
        warm = warm or built.warm_up
        for r in range(repeats):
            requests[(length, r)] = built.levels[r]
    assert warm is not None, "no prompt lengths"
    description = {
        "dataset": "random",
        "prompt_lens": list(prompt_lens),
        "output_len": output_len,
        "requests_per_repeat": per_repeat,
        "seed": seed,
    }
    return Suite(TTFT, tuple(prompt_lens), warm, requests, description)
