"""Accepts or rejects one speculative draft token against the target model's logits.

The rule is speculative sampling (Leviathan et al. 2023; Chen et al. 2023) with a
deterministic draft, q = one-hot(d): accept d with probability min(1, p(d) / q(d)) =
p(d); on rejection sample from the residual max(0, p - q), which is p with d removed and
renormalised. The emitted token is then distributed exactly as p. Here p is the target's
distribution after every control the sampler applies (grammar mask, logit_bias, bans,
penalties, temperature, top-k, top-p, min-p), computed by the sampler's own
`process_logits`, so a speculating row samples from the same law as a plain one. Greedy
rows accept d exactly when it is the argmax, so greedy output is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tokenmill.engine.sampler import (
    SamplingRow,
    TopLogprobs,
    process_logits,
    random_sample,
    top_logprobs,
)


@dataclass
class Choice:
    """The token emitted at one verified position."""

    token_id: int
    accepted: bool
    """True when it is the draft (always False for the bonus position)."""
    logprobs: TopLogprobs | None


def choose(logits: torch.Tensor, row: SamplingRow, draft: int | None) -> Choice:
    """The token at one position from its raw logits (V,) float32 and the row's controls
    (read at this position: the output so far, the grammar's state). `draft` is the
    proposed token, or None at the bonus position after every draft was accepted, where
    this samples as the plain sampler does. Mutates nothing but the row's generator,
    which it advances (one uniform draw to test a draft, one noise row to sample)."""
    raw = logits.unsqueeze(0)  # (1, V)
    processed = process_logits(raw.clone(), [row])
    if row.params.greedy:
        token = int(processed.argmax(dim=1))
    else:
        probs = processed.softmax(dim=1)  # (1, V)
        token = -1
        if draft is not None:
            u = (
                torch.rand(1, generator=row.generator, device=row.generator.device)
                if (row.generator is not None)
                else torch.rand(1)
            )
            if float(u) < float(probs[0, draft]):
                token = draft
            else:
                probs[0, draft] = 0.0
                probs /= probs.sum()
        if token < 0:
            token = int(random_sample(probs, [row.generator])[0])
    top = None
    if row.params.logprobs is not None:
        raw_lp = raw.log_softmax(dim=1)
        top = top_logprobs(raw_lp, torch.tensor([token]), [row.params.logprobs])[0]
    return Choice(token, draft is not None and token == draft, top)
