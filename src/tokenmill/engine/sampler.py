"""Turns a batch of next-token logits into one token per row, plus requested logprobs.

Processing order per row: the grammar's token bitmask (structured output), logit_bias, banned ids, penalties (repetition, presence,
frequency), temperature, top-k, top-p, min-p, then sampling. Greedy rows (temperature 0)
take the argmax after bias, bans and penalties. Every stage runs once for the whole batch
and is skipped when no row uses it; the only per-row Python work is reading parameters,
drawing noise for seeded rows and packing logprob lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tokenmill.engine.grammar import TokenConstraint, allocate_bitmask, apply_bitmask
from tokenmill.engine.logits_processors import (
    apply_banned,
    apply_logit_bias,
    apply_min_p,
    apply_penalties,
    apply_temperature,
    apply_top_k_top_p,
)
from tokenmill.model.kernels import cpu_kernels
from tokenmill.sampling_params import SamplingParams

_PROMPT_LOGPROBS_CHUNK = 256
"""Prompt positions turned into log-probabilities at once, bounding a (chunk, V) buffer."""


@dataclass
class SamplingRow:
    """What the sampler needs to know about one row of the logits batch."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None
    """Set for seeded requests: the engine seeds it with `params.choice_seed(i)`
    for completion i, and the sampler advances it once per sampled token."""
    banned_token_ids: list[int]
    """Masked to -inf before anything else samples (EOS and stop ids below min_tokens)."""
    constraint: TokenConstraint | None = None
    """Set for structured output: tokens its grammar forbids next are masked to -inf
    first. The sampler only reads it; the engine advances it with the chosen token."""


@dataclass
class TopLogprobs:
    """Log-probabilities at one position: the chosen token first, then the top-N in rank order.

    Values are of the model's raw distribution (log_softmax of the unprocessed logits, as vLLM
    v1 returns by default), not of the distribution after temperature, penalties or filters.
    """

    token_ids: list[int]
    logprobs: list[float]
    ranks: list[int]
    """1 = most likely; the chosen token's true rank, then 1..N for the alternatives."""


@dataclass
class SamplerOutput:
    """One sampled token per row, and its logprobs where the row asked for them."""

    token_ids: list[int]
    logprobs: list[TopLogprobs | None]
    """None where the row's `params.logprobs` is None."""


class Sampler:
    """Stateless apart from the generators it is handed, which it advances."""

    def sample(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        """Choose the next token for each row of `logits` (N, V) float32, row i for `rows[i]`.

        Mutates `logits` in place (it holds the processed logits afterwards) and advances the
        generator of each seeded, non-greedy row. A seeded row's token depends only on its
        generator's state, its logits and its params, never on the rest of the batch.
        Logprobs are of the raw distribution (log_softmax of `logits` before processing).
        """
        wants_logprobs = [i for i, row in enumerate(rows) if row.params.logprobs is not None]
        raw_logprobs = logits[wants_logprobs].log_softmax(dim=1) if wants_logprobs else None
        process_logits(logits, rows)
        sampled = [i for i, row in enumerate(rows) if not row.params.greedy]
        if len(sampled) == len(rows):
            token_ids = random_sample(logits.softmax(dim=1), [row.generator for row in rows])
        else:
            token_ids = greedy_ids(logits)
            if sampled:
                probs = logits[sampled].softmax(dim=1)
                generators = [rows[i].generator for i in sampled]
                token_ids[sampled] = random_sample(probs, generators)
        logprobs: list[TopLogprobs | None] = [None] * len(rows)
        if raw_logprobs is not None:
            top_n = [rows[i].params.logprobs for i in wants_logprobs]
            chosen = token_ids[wants_logprobs]
            for i, entry in zip(wants_logprobs, top_logprobs(raw_logprobs, chosen, top_n)):
                logprobs[i] = entry
        return SamplerOutput(token_ids=token_ids.tolist(), logprobs=logprobs)


def greedy_ids(logits: torch.Tensor) -> torch.Tensor:
    """Each row's first largest index, (N,) int64; `logits` holds no NaN (process_logits
    leaves none). The native pass where the kernels are built: ATen's CPU argmax and max
    with indices are not vectorized (2.5 and 0.85 ms at 32 rows of SmolLM2's 49152
    logits; the native pass ~0.1 ms)."""
    kernels = cpu_kernels()
    if kernels is not None and logits.dtype == torch.float32 and logits.device.type == "cpu":
        return kernels.argmax_rows(logits)
    return logits.max(dim=1).indices


def process_logits(logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
    """Apply every control of `rows` to `logits` (N, V) in the sampler's order; mutates it.

    Greedy rows get bias, bans and penalties only; the later stages see neutral values for
    them, which leave their logits unchanged. Returns `logits`.
    """
    params = [row.params for row in rows]
    grammar = _apply_constraints(logits, rows)
    _apply_bias_and_bans(logits, rows)
    if any(_uses_penalties(p) for p in params):
        _apply_row_penalties(logits, rows)
    sampled = [not p.greedy for p in params]
    if not any(sampled):
        return _keep_samplable(logits, grammar)
    vocab = logits.shape[1]
    temperature = [p.temperature if s else 1.0 for p, s in zip(params, sampled)]
    top_k = [min(p.top_k, vocab) if s and p.top_k > 0 else vocab for p, s in zip(params, sampled)]
    top_p = [p.top_p if s else 1.0 for p, s in zip(params, sampled)]
    min_p = [p.min_p if s else 0.0 for p, s in zip(params, sampled)]
    device = logits.device
    if any(t != 1.0 for t in temperature):
        apply_temperature(logits, torch.tensor(temperature, device=device))
    use_top_k = any(k < vocab for k in top_k)
    use_top_p = any(p < 1.0 for p in top_p)
    if use_top_k or use_top_p:
        apply_top_k_top_p(
            logits,
            torch.tensor(top_k, device=device) if use_top_k else None,
            torch.tensor(top_p, device=device) if use_top_p else None,
        )
    if any(m > 0.0 for m in min_p):
        apply_min_p(logits, torch.tensor(min_p, device=device))
    return _keep_samplable(logits, grammar)


def _keep_samplable(
    logits: torch.Tensor, grammar: tuple[list[int], torch.Tensor] | None
) -> torch.Tensor:
    """Leaves every row with a token to pick; mutates `logits`, returns it.

    - +inf (a logit divided by a tiny repetition_penalty or temperature) becomes the
      largest float and NaN becomes -inf, so softmax stays a distribution.
    - A constrained row left with no finite logit gets its grammar-masked logits back: a
      ban took the only tokens its grammar allows (min_tokens bans EOS, which is all a
      completed grammar allows). A token outside the grammar cannot be emitted, so the
      grammar wins over min_tokens, stop_token_ids and logit bans.
    """
    # One pass finds both: max is NaN where any logit is NaN, +inf where any is +inf.
    top = float(logits.max()) if logits.numel() else 0.0
    if math.isnan(top) or top == math.inf:
        torch.nan_to_num_(logits, nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)
    if grammar is not None:
        constrained, masked = grammar
        for j, i in enumerate(constrained):
            if not torch.isfinite(logits[i]).any():
                logits[i] = masked[j]
    return logits


def random_sample(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """Draw one token per row of `probs` (M, V) by the exponential race: argmax(p / q).

    With q = -log(U), U ~ Uniform[0, 1) i.i.d., q is Exp(1) and argmax(p_j / q_j) is
    distributed as p. (`-log(rand)` rather than `exponential_`, which is several times
    slower on CPU; U = 0 gives q = inf, which only makes that token lose.) Row i's noise
    comes from `generators[i]` when set (drawn on the generator's device, then moved), so
    its token depends only on that generator and `probs[i]`; other rows share one draw.
    Mutates `probs` and advances the given generators. Returns (M,) int64.
    """
    uniform = torch.empty_like(probs)
    if any(g is None for g in generators):
        uniform.uniform_()
    for i, generator in enumerate(generators):
        if generator is not None:
            row = torch.rand(probs.shape[1], generator=generator, device=generator.device)
            uniform[i] = row.to(probs.device)
    noise = uniform.log_().neg_()
    return probs.div_(noise).max(dim=1).indices


def top_logprobs(
    logprobs: torch.Tensor, chosen: torch.Tensor, top_n: list[int]
) -> list[TopLogprobs]:
    """Package row i of `logprobs` (M, V): `chosen[i]` with its rank, then the top `top_n[i]`.

    Mutates nothing. Ranks count strictly larger logprobs, so a tie shares the better rank.
    """
    chosen_lp = logprobs.gather(1, chosen.unsqueeze(1))
    ranks = ((logprobs > chosen_lp).sum(dim=1) + 1).tolist()
    widest = max(top_n, default=0)
    top_lp, top_ids = logprobs.topk(widest, dim=1)
    top_lp_rows, top_id_rows = top_lp.tolist(), top_ids.tolist()
    out = []
    for i, (token, value) in enumerate(zip(chosen.tolist(), chosen_lp.squeeze(1).tolist())):
        n = top_n[i]
        out.append(
            TopLogprobs(
                token_ids=[token, *top_id_rows[i][:n]],
                logprobs=[value, *top_lp_rows[i][:n]],
                ranks=[ranks[i], *range(1, n + 1)],
            )
        )
    return out


def prompt_logprobs(
    logits: torch.Tensor, target_ids: torch.Tensor, top_n: int
) -> list[TopLogprobs]:
    """Logprobs of `target_ids` (P,) under `logits` (P, V), row p predicting target p.

    Raw distribution (log_softmax of the given logits), computed in chunks of positions to
    bound memory. Mutates nothing. The caller prepends None for the first prompt token.
    """
    out: list[TopLogprobs] = []
    target_ids = target_ids.to(logits.device)
    for start in range(0, logits.shape[0], _PROMPT_LOGPROBS_CHUNK):
        end = start + _PROMPT_LOGPROBS_CHUNK
        chunk = logits[start:end].float().log_softmax(dim=1)
        out.extend(top_logprobs(chunk, target_ids[start:end], [top_n] * chunk.shape[0]))
    return out


def _uses_penalties(params: SamplingParams) -> bool:
    return (
        params.repetition_penalty != 1.0
        or params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
    )


def _apply_constraints(
    logits: torch.Tensor, rows: list[SamplingRow]
) -> tuple[list[int], torch.Tensor] | None:
    """One bitmask for the batch, filled only for constrained rows, so free rows in the
    same batch pay nothing but the check. Returns the constrained rows' indices and a
    copy of their masked logits (for _keep_samplable), or None without constraints."""
    constrained = [i for i, row in enumerate(rows) if row.constraint is not None]
    if not constrained:
        return None
    bitmask = allocate_bitmask(len(rows), logits.shape[1])
    for i in constrained:
        rows[i].constraint.fill_bitmask(bitmask, i)
    apply_bitmask(logits, bitmask, constrained)
    return constrained, logits[constrained].clone()


def _apply_bias_and_bans(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    device = logits.device
    bias_rows, bias_tokens, bias_values = [], [], []
    ban_rows, ban_tokens = [], []
    for i, row in enumerate(rows):
        if row.params.logit_bias:
            bias_rows += [i] * len(row.params.logit_bias)
            bias_tokens += row.params.logit_bias.keys()
            bias_values += row.params.logit_bias.values()
        if row.banned_token_ids:
            ban_rows += [i] * len(row.banned_token_ids)
            ban_tokens += row.banned_token_ids
    if bias_rows:
        apply_logit_bias(
            logits,
            torch.tensor(bias_rows, device=device),
            torch.tensor(bias_tokens, device=device),
            torch.tensor(bias_values, device=device),
        )
    if ban_rows:
        apply_banned(
            logits, torch.tensor(ban_rows, device=device), torch.tensor(ban_tokens, device=device)
        )


def _apply_row_penalties(logits: torch.Tensor, rows: list[SamplingRow]) -> None:
    """Token lists are passed only for rows that use penalties; the others get []."""
    device = logits.device
    uses = [_uses_penalties(row.params) for row in rows]
    repeats = [row.params.repetition_penalty != 1.0 for row in rows]
    apply_penalties(
        logits,
        [row.prompt_token_ids if r else [] for row, r in zip(rows, repeats)],
        [row.output_token_ids if u else [] for row, u in zip(rows, uses)],
        torch.tensor([r.params.repetition_penalty for r in rows], device=device),
        torch.tensor([r.params.presence_penalty for r in rows], device=device),
        torch.tensor([r.params.frequency_penalty for r in rows], device=device),
    )
