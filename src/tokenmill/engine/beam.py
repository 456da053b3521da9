"""The search state of one beam-search request: its live beams, their scores and the
finished hypotheses, advanced one token at a time as transformers' `_beam_search` does.

The live beams are ordinary scheduler sequences (Requests), stepped in the same batches
as everything else. A beam whose next-token row has arrived waits (it has no tokens
left to compute) until every live beam of its request has one; then `advance` scores
all `live x vocab` continuations at once. The engine core carries out the decision:
it forks, extends and frees sequences (see EngineCore._apply_beam_step).

Scoring follows transformers 5.x (generation/utils.py, `_beam_search`):
- a continuation's score is its beam's score plus the token's log-softmax;
- the best `max(2, 1 + len(eos)) * width` continuations are ranked; of those ending a
  hypothesis (EOS, or the max_tokens-th token), only the ones ranked within the first
  `width` become finished hypotheses, scored `score / generated_len ** length_penalty`
  (generated_len counts the EOS), and the best `width` finished ones are kept;
- the best `width` continuations that do not end are the next live beams;
- the search stops when `early_stopping` is True and `width` hypotheses finished, when
  no live beam can beat the worst finished one (the heuristic of
  `_check_early_stop_heuristic`), or when every candidate ended (max_tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tokenmill.engine.request import Request
from tokenmill.sampling_params import BeamSpec


@dataclass
class Hypothesis:
    """A finished beam: its generated tokens and length-penalised score."""

    score: float
    token_ids: list[int]


@dataclass
class BeamChoice:
    """One continuation kept as a live beam: extend `source` by `token_id`."""

    source: Request
    token_id: int
    score: float
    """Summed log-probability of the beam's generated tokens, this one included."""


@dataclass
class BeamStep:
    """What one `advance` decided. When `done`, `survivors` is empty and the result is
    `BeamSearch.best()`."""

    survivors: list[BeamChoice] = field(default_factory=list)
    done: bool = False


class BeamSearch:
    """One request's beam state. Does not touch the scheduler or the KV cache: the
    caller applies each BeamStep and then hands the new live beams to `set_live`."""

    def __init__(
        self, spec: BeamSpec, n: int, max_tokens: int, eos_token_ids: set[int], root: Request
    ):
        self.spec = spec
        self.n = n
        self.max_tokens = max_tokens
        self.eos_token_ids = frozenset(eos_token_ids)
        self.root = root
        """The sequence that prefilled the prompt: its timings stand for the request's."""
        self.live: list[Request] = [root]
        self.scores: list[float] = [0.0]
        self.finished: list[Hypothesis] = []
        self.generated = 0
        """Tokens every live beam has generated (they advance in lockstep)."""
        self._rows: dict[int, torch.Tensor] = {}
        self.parked: list[Request] = []
        """Live beams taken out of the batch (their rows are in) to let the others run."""
        self._improvable = True

    def offer(self, beam: Request, logits: torch.Tensor) -> bool:
        """Record a live beam's next-token logits (vocab,). Returns True once every live
        beam has one, i.e. `advance` may run. A repeated offer (the beam was preempted
        and recomputed) replaces the earlier row."""
        self._rows[id(beam)] = torch.log_softmax(logits.float(), dim=-1)
        return all(id(b) in self._rows for b in self.live)

    def advance(self) -> BeamStep:
        """Score every continuation of every live beam; update the finished hypotheses.
        Mutates `finished`, `generated` and the pending rows (cleared); the live beams
        stay as they are until `set_live`."""
        width = self.spec.width
        rows = torch.stack([self._rows[id(b)] for b in self.live])  # (live, vocab)
        self._rows.clear()
        vocab = rows.shape[-1]
        scores = torch.tensor(self.scores, dtype=torch.float32)
        flat = (rows + scores[:, None]).reshape(-1)
        keep = min(max(2, 1 + len(self.eos_token_ids)) * width, flat.numel())
        top_scores, top_idx = torch.topk(flat, keep)
        new_len = self.generated + 1
        at_limit = new_len >= self.max_tokens
        survivors: list[BeamChoice] = []
        ended: list[tuple[float, list[int]]] = []
        any_open = False
        for rank, (score, idx) in enumerate(zip(top_scores, top_idx.tolist())):
            source, token = self.live[idx // vocab], idx % vocab
            ends = at_limit or token in self.eos_token_ids
            if not ends:
                any_open = True
                if len(survivors) < width:
                    survivors.append(BeamChoice(source, token, float(score)))
            elif rank < width:
                penalised = score / (new_len**self.spec.length_penalty)
                ended.append((float(penalised), source.output_token_ids + [token]))
        self._add_finished(ended)
        self.generated = new_len
        done = not any_open or (self.spec.early_stopping is True and self._full)
        if not done and self._improvable and survivors:
            self._improvable = self._can_improve(survivors[0].score)
        if done or not self._improvable:
            return BeamStep(done=True)
        return BeamStep(survivors=survivors)

    def set_live(self, beams: list[Request], scores: list[float]) -> None:
        """The live beams after the caller applied a BeamStep (same order as its
        survivors). Clears `parked`: the caller has re-queued the parked survivors."""
        self.live, self.scores = beams, scores
        self.parked = []

    def waiting_on_others(self, beam: Request) -> bool:
        """Whether `beam` is live and its next-token row is in (it waits for the rest)."""
        return id(beam) in self._rows and any(b is beam for b in self.live)

    def best(self) -> list[Hypothesis]:
        """The `n` best finished hypotheses, best first."""
        return self.finished[: self.n]

    @property
    def _full(self) -> bool:
        return len(self.finished) >= self.spec.width

    def _add_finished(self, ended: list[tuple[float, list[int]]]) -> None:
        # transformers refuses new hypotheses once the heuristic said no live beam can
        # improve, and, with early_stopping=True, once all `width` slots are taken.
        if not ended or not self._improvable or (self.spec.early_stopping is True and self._full):
            return
        merged = self.finished + [Hypothesis(s, t) for s, t in ended]
        merged.sort(key=lambda h: -h.score)  # stable: earlier hypotheses win ties
        self.finished = merged[: self.spec.width]

    def _can_improve(self, best_running: float) -> bool:
        """transformers' `_check_early_stop_heuristic`, after `generated` was advanced."""
        if not self._full:
            return True
        penalty = self.spec.length_penalty
        length = self.generated
        if self.spec.early_stopping == "never" and penalty > 0.0:
            length = self.max_tokens
        best_possible = torch.tensor(best_running, dtype=torch.float32) / (length**penalty)
        return bool(best_possible > min(h.score for h in self.finished))
