"""Batched transforms of a logits matrix, one per sampling control.

Every function takes `logits` of shape (N, V) and per-row parameter tensors of shape (N,),
modifies `logits` in place and returns it. Rows that do not use a control carry its neutral
value (temperature 1, top-k V, top-p 1, min-p 0, penalties 1/0/0), for which the transform
leaves the row bit-for-bit unchanged, so the caller can apply one call to the whole batch.
None of them loop over rows in Python.
"""

from __future__ import annotations

import torch


def apply_logit_bias(
    logits: torch.Tensor, row_ids: torch.Tensor, token_ids: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Add `bias[j]` to `logits[row_ids[j], token_ids[j]]` for every j; mutates `logits`.

    The three index tensors are 1-D and of equal length; token ids must be below V.
    """
    logits.index_put_((row_ids, token_ids), bias.to(logits.dtype), accumulate=True)
    return logits


def apply_banned(
    logits: torch.Tensor, row_ids: torch.Tensor, token_ids: torch.Tensor
) -> torch.Tensor:
    """Set `logits[row_ids[j], token_ids[j]]` to -inf for every j; mutates `logits`."""
    logits[row_ids, token_ids] = float("-inf")
    return logits


def apply_penalties(
    logits: torch.Tensor,
    prompt_token_ids: list[list[int]],
    output_token_ids: list[list[int]],
    repetition: torch.Tensor,
    presence: torch.Tensor,
    frequency: torch.Tensor,
) -> torch.Tensor:
    """Apply repetition, presence and frequency penalties; mutates `logits` (contiguous).

    Row i's tokens are `prompt_token_ids[i]` and `output_token_ids[i]` (pass [] for rows
    that need none). Repetition (CTRL): for tokens seen in the prompt or the output, a
    positive logit is divided by `repetition[i]` and a negative one multiplied by it. Then,
    over output tokens only (OpenAI): subtract `frequency[i] * count + presence[i]`.
    The arithmetic touches only the seen (row, token) pairs.
    """
    vocab, device = logits.shape[1], logits.device
    flat = logits.view(-1)
    outputs, counts = _flat_positions(output_token_ids, vocab, device).unique(return_counts=True)
    # A boolean scatter then nonzero dedupes long prompts several times faster than unique.
    seen_mask = torch.zeros(flat.shape[0], dtype=torch.bool, device=device)
    seen_mask[_flat_positions(prompt_token_ids, vocab, device)] = True
    seen_mask[outputs] = True
    seen = seen_mask.nonzero().squeeze(1)
    values = flat[seen]
    penalty = repetition.to(logits.dtype)[seen // vocab]
    flat[seen] = torch.where(values > 0, values / penalty, values * penalty)
    rows = outputs // vocab
    frequency, presence = frequency.to(logits.dtype), presence.to(logits.dtype)
    flat[outputs] -= frequency[rows] * counts.to(logits.dtype) + presence[rows]
    return logits


def apply_temperature(logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """Divide row i by `temperature[i]` (> 0); mutates `logits`."""
    logits.div_(temperature.to(logits.dtype).unsqueeze(1))
    return logits


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep exactly `min(top_k[i], V)` largest logits of row i, the rest to -inf; mutates.

    Ties at the boundary are broken by `torch.topk`, so the kept count is exact.
    """
    vocab = logits.shape[1]
    k = top_k.clamp(max=vocab)
    values, indices = logits.topk(int(k.max()), dim=1)
    position = torch.arange(values.shape[1], device=logits.device)
    values.masked_fill_(position >= k.unsqueeze(1), float("-inf"))
    logits.fill_(float("-inf")).scatter_(1, indices, values)
    return logits


def apply_top_k_top_p(
    logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None
) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering; masked logits become -inf; mutates `logits`.

    `top_k` (N,) int, V or more meaning off; `top_p` (N,) in (0, 1], 1 meaning off; either
    may be None when no row uses it. Top-p keeps the smallest set of most likely tokens whose
    probability (after top-k) sums to at least `top_p[i]`, and always at least one token.
    """
    if top_p is None:
        return logits if top_k is None else apply_top_k(logits, top_k)
    vocab = logits.shape[1]
    if (top_k is None or int(top_k.min()) >= vocab) and _nucleus_from_candidates(logits, top_p):
        return logits
    if top_k is not None and int(top_k.max()) < vocab:
        # Every row is cut to its top k anyway: a partial sort is much cheaper than a full one.
        sorted_logits, order = logits.topk(int(top_k.max()), dim=1)
        logits.fill_(float("-inf"))
    else:
        sorted_logits, order = logits.sort(dim=1, descending=True)
    position = torch.arange(sorted_logits.shape[1], device=logits.device)
    if top_k is not None:
        sorted_logits.masked_fill_(position >= top_k.unsqueeze(1), float("-inf"))
    probs = sorted_logits.softmax(dim=1)
    mass_before = probs.cumsum(dim=1) - probs
    drop = mass_before >= top_p.to(probs.dtype).unsqueeze(1)
    # Rounding can push the cumulative mass to 1 early; rows with top_p 1 must stay whole.
    drop &= (top_p < 1.0).unsqueeze(1)
    drop[:, 0] = False
    sorted_logits.masked_fill_(drop, float("-inf"))
    logits.scatter_(1, order, sorted_logits)
    return logits


# Nucleus candidates examined before falling back to a full sort of the vocabulary.
_NUCLEUS_CANDIDATES = 1024


def _nucleus_from_candidates(logits: torch.Tensor, top_p: torch.Tensor) -> bool:
    """Top-p without sorting the vocabulary: when each filtered row's `top_p` mass lies
    within its most likely `_NUCLEUS_CANDIDATES` tokens (the usual case), a partial sort
    decides the same nucleus. Mutates the rows with top_p < 1 and returns True; returns
    False, touching nothing, when some row needs the full sort."""
    rows = (top_p < 1.0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return True
    sub = logits.index_select(0, rows)
    k = min(_NUCLEUS_CANDIDATES, sub.shape[1])
    cand, order = sub.topk(k, dim=1)  # sorted, descending
    probs = (cand - sub.logsumexp(dim=1, keepdim=True)).exp()
    cum = probs.cumsum(dim=1)
    p = top_p.index_select(0, rows).to(probs.dtype).unsqueeze(1)
    if not bool((cum[:, -1:] >= p).all()):
        return False
    drop = (cum - probs) >= p
    drop[:, 0] = False
    cand.masked_fill_(drop, float("-inf"))
    sub.fill_(float("-inf")).scatter_(1, order, cand)
    logits.index_copy_(0, rows, sub)
    return True


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Mask tokens whose probability is below `min_p[i]` times row i's top probability.

    Masked logits become -inf; mutates `logits`. The top token always survives.
    """
    probs = logits.softmax(dim=1)
    threshold = probs.amax(dim=1, keepdim=True) * min_p.to(probs.dtype).unsqueeze(1)
    logits.masked_fill_(probs < threshold, float("-inf"))
    return logits


def _flat_positions(token_lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """Indices into the flattened (N, V) logits: `i * vocab + token` for each row i's tokens."""
    lengths = torch.tensor([len(tokens) for tokens in token_lists], device=device)
    rows = torch.repeat_interleave(torch.arange(len(token_lists), device=device), lengths)
    tokens = torch.tensor([t for ts in token_lists for t in ts], dtype=torch.long, device=device)
    return rows * vocab + tokens
