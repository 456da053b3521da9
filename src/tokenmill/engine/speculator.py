"""Speculative decoding's engine side: who speculates, their drafts, their verification.

Each step, before scheduling, a decoding sequence may get drafts (`propose`); the
scheduler then gives it 1 + len(drafts) positions, computed as one short chunk through
the paged KV cache (as a chunked prefill is), and the runner returns one logits row per
position. `verify` walks those rows in order: a draft is kept while the model accepts it,
the first rejection (or the bonus row after every draft) yields one token from the model,
and every emitted token passes the stop rules in order. The caller rolls back the KV
positions of rejected drafts.

Which requests speculate: every sequence while speculation is on, except structured
output (its grammar state would have to follow drafts that may be rejected) and beam
search (its beams are ranked on one step's logits each). Logprobs,
penalties, logit_bias, min_tokens, stop strings and n > 1 are supported: each position is
processed with the sequence's state at that position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from tokenmill.config import SpeculativeConfig
from tokenmill.engine.draft_proposer import DraftProposer
from tokenmill.engine.draft_verifier import choose
from tokenmill.engine.ngram_proposer import NgramProposer, SpeculationState
from tokenmill.engine.request import Request
from tokenmill.engine.sampler import SamplingRow, TopLogprobs
from tokenmill.sampling_params import SamplingParams

Emit = Callable[[Request, int, TopLogprobs | None], bool]
"""Appends one token to a sequence; returns True if it finished the sequence."""


@dataclass
class Verified:
    """What one verify pass did to a sequence."""

    num_emitted: int
    num_rejected: int
    """Draft positions whose KV must be rolled back (0 when the sequence finished)."""
    finished: bool


class Speculator:
    """Owns the proposer and the cumulative speculation counters; mutates the
    SpeculationState of the sequences it is handed."""

    def __init__(
        self,
        config: SpeculativeConfig,
        max_model_len: int,
        draft: DraftProposer | None = None,
    ):
        """draft: the draft-model proposer in draft:MODEL mode; None for prompt lookup."""
        self.config = config
        self.proposer = NgramProposer(config, max_model_len)
        self.draft = draft
        self.draft_tokens = 0
        self.accepted_tokens = 0
        self.verify_steps = 0

    def new_state(self, params: SamplingParams) -> SpeculationState | None:
        """A fresh state for a sequence that may speculate; None for one that may not."""
        plain = params.structured is None and params.beam is None
        return SpeculationState() if plain else None

    def propose(self, running: list[Request]) -> None:
        """Set this step's drafts on every running sequence that decodes (all its tokens
        computed but the last) and has not been turned off; clears the others'. In
        draft mode, frees the draft caches of sequences no longer running or turned off
        (finished, aborted, preempted)."""
        if self.draft is not None:
            self.draft.retain(
                {r.request_id for r in running if r.spec is not None and not r.spec.disabled}
            )
        for req in running:
            spec = req.spec
            if spec is None:
                continue
            spec.draft_token_ids = []
            if spec.disabled or req.num_computed_tokens != req.num_tokens - 1:
                continue
            tokens = req.prompt_token_ids + req.output_token_ids
            if self.draft is not None:
                spec.draft_token_ids = self.draft.propose(
                    req.request_id, tokens, len(req.output_token_ids), req.max_tokens
                )
            else:
                spec.draft_token_ids = self.proposer.propose(
                    tokens, len(req.output_token_ids), req.max_tokens
                )

    def release(self, req: Request) -> None:
        """Free whatever the proposer keeps for `req` (its draft cache), at its end."""
        if self.draft is not None:
            self.draft.release(req.request_id)

    def verify(
        self,
        req: Request,
        logits: torch.Tensor,
        sampling_row: Callable[[Request], SamplingRow],
        emit: Emit,
    ) -> Verified:
        """Emit `req`'s tokens from its verify rows `logits` (len(drafts) + 1, V): each
        accepted draft, then the model's token at the first rejection or the bonus row.
        `sampling_row` is read afresh per position (it sees the tokens emitted so far).
        Clears the drafts and records the acceptance (auto-off, which frees the
        sequence's draft cache)."""
        drafts = req.spec.draft_token_ids
        req.spec.draft_token_ids = []
        accepted = emitted = 0
        finished = False
        for j in range(len(drafts) + 1):
            draft = drafts[j] if j < len(drafts) else None
            choice = choose(logits[j], sampling_row(req), draft)
            finished = emit(req, choice.token_id, choice.logprobs)
            emitted += 1
            accepted += choice.accepted
            if finished or not choice.accepted:
                break
        self.verify_steps += 1
        self.draft_tokens += len(drafts)
        self.accepted_tokens += accepted
        req.spec.record(len(drafts), accepted, self.config)
        if req.spec.disabled:
            self.release(req)
        return Verified(emitted, 0 if finished else len(drafts) - accepted, finished)
