"""The naive baseline: Hugging Face transformers `generate` with static batching.

Requests are taken in fixed batches of B (B = the concurrency level); a batch starts only
when the previous one has finished, every sequence runs to the batch's max_new_tokens,
and prompts are left-padded to the longest in the batch. Each request's TTFT is the time
from its batch's start to the batch's first generated token; ITL is the gap between the
batch's decode steps. `bench compare` runs it in a pinned worker process
(tokenmill.bench.hf_worker), like a server.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tokenmill.bench.metrics import RequestResult
from tokenmill.bench.tokenizer import smollm2_gguf_path
from tokenmill.bench.workload import BenchRequest

if TYPE_CHECKING:
    import torch


class StepClock:
    """A logits processor that records the time of every decode step and changes nothing.

    `generate` calls it once per new token, right after the forward pass that produced
    that token's logits, so its first timestamp marks the end of prefill.
    """

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.times.append(time.perf_counter())
        return scores


class HFStaticBatcher:
    """A transformers causal LM and tokenizer, loaded from a GGUF (dequantized to `dtype`:
    "float32" or "bfloat16")."""

    def __init__(self, gguf: Path | None = None, threads: int = 2, dtype: str = "float32") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}.")
        gguf = gguf or smollm2_gguf_path()
        torch.set_num_threads(threads)
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
        ).eval()

    def run_batch(self, batch: list[BenchRequest]) -> list[RequestResult]:
        """Generate for one batch, every sequence to the batch's largest output_len
        (end-of-sequence ignored); return one timed result per request."""
        from transformers import LogitsProcessorList

        new_tokens = max(r.output_len for r in batch)
        enc = self.tokenizer(
            [r.prompt for r in batch], return_tensors="pt", padding=True, add_special_tokens=False
        )
        clock = StepClock()
        start = time.perf_counter()
        with self._torch.inference_mode():
            self.model.generate(
                **enc,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([clock]),
            )
        end = time.perf_counter()
        ttft = clock.times[0] - start if clock.times else end - start
        itl = [b - a for a, b in zip(clock.times, clock.times[1:])]
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        return [
            RequestResult(
                success=True,
                prompt_tokens=int(n),
                output_tokens=new_tokens,
                ttft=ttft,
                e2e=end - start,
                itl=list(itl),
            )
            for n in lengths
        ]

    def warm_up(self, request: BenchRequest) -> None:
        """Generate two tokens once, so lazy initialisation is not timed in a level."""
        self.run_batch([BenchRequest(request.prompt, request.prompt_len, output_len=2)])

    def run_requests(
        self, requests: list[BenchRequest], batch_size: int
    ) -> tuple[list[RequestResult], float]:
        """Run `requests` in static batches of `batch_size`; returns every request's result
        and the wall time in seconds. A batch that raises fails its requests."""
        results: list[RequestResult] = []
        start = time.perf_counter()
        for i in range(0, len(requests), batch_size):
            batch = requests[i : i + batch_size]
            try:
                results += self.run_batch(batch)
            except RuntimeError as exc:
                results += [RequestResult(False, r.prompt_len, error=str(exc)) for r in batch]
            print(
                f"  transformers batch {batch_size}: {len(results)}/{len(requests)}",
                file=sys.stderr,
                flush=True,
            )
        return results, time.perf_counter() - start
