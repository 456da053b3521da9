"""The quality measurements every optimization reports, for the base and the result.

`Metrics` holds the figures; `Evaluator` takes them from anything that implements
`EvalTarget` (tokenmill's offline engine here, onnxruntime for an ONNX export), so
base and result are measured the same way:

- perplexity: exp of the mean negative log-likelihood of the held-out text's tokens
  (each predicted from all tokens before it, in one sequence);
- accuracy: share of the multiple-choice questions whose right answer has the highest
  total log-likelihood after "Question: ...\\nAnswer:";
- agreement: greedy continuations of fixed chat prompts compared with the base
  model's: per prompt, the length of the common prefix over the longer of the two,
  averaged (after the first differing token the texts are no longer comparable);
- size_bytes: the weight files on disk; memory_bytes: the loaded weights in memory;
- tok_s_batch1 / tok_s_batch32: generated tokens per second for 1 and 32 prompts of
  random token ids, greedy, EOS ignored, prefill included.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from tokenmill.model.quant.blocks import module_bytes
from tokenmill.model.tokenizer import Tokenizer
from tokenmill.optimize import data

FIRST_ORDINARY_ID = 17  # below this SmolLM2's ids are special tokens; fine for others too


@dataclass(frozen=True)
class EvalConfig:
    """How much of each measurement to run."""

    heldout_chars: int | None = None
    """Characters of the held-out text to score; None: all of it."""
    num_questions: int | None = None
    """Multiple-choice questions to ask; None: all 60."""
    num_agreement_prompts: int = len(data.AGREEMENT_PROMPTS)
    agreement_tokens: int = 32
    throughput_prompt_len: int = 64
    throughput_new_tokens: int = 64
    throughput_batch: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.num_agreement_prompts <= len(data.AGREEMENT_PROMPTS):
            raise ValueError(f"num_agreement_prompts must be 1..{len(data.AGREEMENT_PROMPTS)}")
        if (
            min(
                self.agreement_tokens,
                self.throughput_prompt_len,
                self.throughput_new_tokens,
                self.throughput_batch,
            )
            < 1
        ):
            raise ValueError("evaluation lengths and batch must be positive")


FULL = EvalConfig()
QUICK = EvalConfig(
    heldout_chars=2500,
    num_questions=24,
    num_agreement_prompts=4,
    agreement_tokens=16,
    throughput_prompt_len=32,
    throughput_new_tokens=16,
)
SMOKE = EvalConfig(
    heldout_chars=2500,
    num_questions=8,
    num_agreement_prompts=4,
    agreement_tokens=16,
    throughput_prompt_len=16,
    throughput_new_tokens=8,
)
"""For the end-to-end tests: QUICK's perplexity text and agreement prompts (the tests
compare those), fewer questions and a shorter throughput run (they check only range)."""
EVAL_CONFIGS = {"full": FULL, "quick": QUICK, "smoke": SMOKE}


@dataclass
class Metrics:
    """One model's figures; `base` and `result` in a report have these keys."""

    perplexity: float
    accuracy: float
    agreement: float
    size_bytes: int
    memory_bytes: int
    tok_s_batch1: float
    tok_s_batch32: float

    def to_dict(self) -> dict:
        return asdict(self)


class EvalTarget(Protocol):
    """What the evaluator needs from a runnable model."""

    tokenizer: Tokenizer
    max_len: int
    """Longest sequence the target takes; longer texts are scored in windows."""
    kernel_path: str
    """What computes it (e.g. "gguf-blocks:avx2", "float32", "int8", onnxruntime)."""

    def prompt_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        """For each sequence, the log-probability of tokens 1.. given those before."""

    def greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        """Greedy continuations, stopping at EOS or after max_tokens."""

    def throughput(self, prompts: list[list[int]], new_tokens: int) -> float:
        """Generated tokens per second for the batch, EOS ignored."""

    def memory_bytes(self) -> int:
        """Bytes of the loaded weights."""


def common_prefix_ratio(a: list[int], b: list[int]) -> float:
    """Length of the common prefix of a and b over the longer length (1.0 if both are
    empty)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 1.0
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n / longest


class Evaluator:
    """Runs the measurements of `config` on a target. Holds nothing between targets
    except the config."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def agreement_prompts(self, tokenizer: Tokenizer) -> list[list[int]]:
        prompts = data.AGREEMENT_PROMPTS[: self.config.num_agreement_prompts]
        out = []
        for p in prompts:
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}])
            out.append(tokenizer.encode(text, add_special_tokens=False))
        return out

    def perplexity(self, target: EvalTarget) -> float:
        text = data.heldout_text()
        if self.config.heldout_chars is not None:
            text = text[: self.config.heldout_chars]
        ids = target.tokenizer.encode(text)
        windows = [ids[i : i + target.max_len] for i in range(0, len(ids), target.max_len)]
        lps = [lp for w in target.prompt_logprobs([w for w in windows if len(w) > 1]) for lp in w]
        return math.exp(-sum(lps) / len(lps))

    def accuracy(self, target: EvalTarget) -> float:
        questions = data.multiple_choice()[: self.config.num_questions]
        tok = target.tokenizer
        seqs, spans = [], []
        for q in questions:
            ctx = tok.encode(q.context())
            for choice in q.choices:
                ans = tok.encode(" " + choice, add_special_tokens=False)
                seqs.append(ctx + ans)
                spans.append(len(ans))
        lps = target.prompt_logprobs(seqs)
        right, i = 0, 0
        for q in questions:
            scores = []
            for _ in q.choices:
                scores.append(sum(lps[i][-spans[i] :]))
                i += 1
            right += int(max(range(len(scores)), key=scores.__getitem__) == q.answer)
        return right / len(questions)

    def throughput_prompts(self, vocab: int, n: int) -> list[list[int]]:
        rng = random.Random(self.config.seed)
        length = self.config.throughput_prompt_len
        return [[rng.randrange(FIRST_ORDINARY_ID, vocab) for _ in range(length)] for _ in range(n)]

    def evaluate(
        self, target: EvalTarget, size_bytes: int, reference: list[list[int]] | None
    ) -> tuple[Metrics, list[list[int]]]:
        """All figures for `target`, and its greedy continuations of the agreement prompts
        (the base's become the `reference` of every result; agreement is 1.0 without
        one)."""
        cfg = self.config
        greedy = target.greedy(self.agreement_prompts(target.tokenizer), cfg.agreement_tokens)
        if reference is None:
            agreement = 1.0
        else:
            ratios = [common_prefix_ratio(a, b) for a, b in zip(greedy, reference, strict=True)]
            agreement = sum(ratios) / len(ratios)
        vocab = target.tokenizer.vocab_size
        prompts = self.throughput_prompts(vocab, cfg.throughput_batch)
        target.throughput(prompts[:2], 4)  # warm-up: kernels, allocator, caches
        metrics = Metrics(
            perplexity=self.perplexity(target),
            accuracy=self.accuracy(target),
            agreement=agreement,
            size_bytes=size_bytes,
            memory_bytes=target.memory_bytes(),
            tok_s_batch1=target.throughput(prompts[:1], cfg.throughput_new_tokens),
            tok_s_batch32=target.throughput(prompts, cfg.throughput_new_tokens),
        )
        return metrics, greedy


class EngineTarget:
    """A model served by tokenmill's offline engine (`tokenmill.LLM`) in the precision
    `tokenmill serve --model MODEL` picks by default (dtype auto): the packaged GGUF on
    its own Q4_1 blocks where the native kernels are built, an int8 output on the int8
    path, a float output in float32 (or bfloat16 on a CPU that computes it natively).
    `kernel_path` says which."""

    def __init__(self, model: str | None, batch: int = 32) -> None:
        from tokenmill.engine.llm import LLM
        from tokenmill.optimize.checkpoint import read_arch

        self.llm = LLM(
            model,
            dtype="auto",
            kv_cache_memory_gib=0.25,
            max_model_len=min(2048, read_arch(model).max_position_embeddings),
            enable_prefix_caching=False,
            max_num_seqs=max(batch, 8),
        )
        self.tokenizer = self.llm.tokenizer
        self.max_len = self.llm.engine.max_model_len
        self.kernel_path = self.llm.engine.loaded.kernel_path

    def prompt_logprobs(self, seqs: list[list[int]]) -> list[list[float]]:
        from tokenmill.sampling_params import SamplingParams

        params = SamplingParams(max_tokens=0, prompt_logprobs=0, temperature=0.0)
        outs = self.llm.generate(seqs, params)
        return [
            [pos[t].logprob for t, pos in zip(o.prompt_token_ids[1:], o.prompt_logprobs[1:])]
            for o in outs
        ]

    def greedy(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        from tokenmill.sampling_params import SamplingParams

        outs = self.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
        return [list(o.outputs[0].token_ids) for o in outs]

    def throughput(self, prompts: list[list[int]], new_tokens: int) -> float:
        from tokenmill.sampling_params import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
        start = time.perf_counter()
        outs = self.llm.generate(prompts, params)
        elapsed = time.perf_counter() - start
        return sum(len(o.outputs[0].token_ids) for o in outs) / elapsed

    def memory_bytes(self) -> int:
        return module_bytes(self.llm.engine.loaded.model)
