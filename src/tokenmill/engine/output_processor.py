"""Turns sampled tokens into text, applies the stop rules, and builds RequestOutputs."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenmill.engine.detokenizer import IncrementalDetokenizer, decode_token
from tokenmill.engine.outputs import (
    CompletionOutput,
    Delta,
    Logprob,
    PositionLogprobs,
    RequestOutput,
)
from tokenmill.engine.request import Request, RequestStatus
from tokenmill.engine.sampler import TopLogprobs
from tokenmill.engine.stop_checker import StopAutomaton, StopChecker


@dataclass
class _Completion:
    """Per-sequence text state."""

    request: Request
    output: CompletionOutput
    detok: IncrementalDetokenizer
    stop: StopChecker
    delta_text: str = ""
    delta_ids: list[int] = field(default_factory=list)
    delta_logprobs: list[PositionLogprobs] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)
    """The text emitted so far, joined once at the end (not copied every step)."""
    changed: bool = False


@dataclass
class ParentState:
    """A client request: its prompt and its `n` sequences."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    completions: list[_Completion]
    prompt_logprobs: list[PositionLogprobs | None] | None = None
    prompt_logprobs_done: bool = False
    emitted_prompt_logprobs: bool = False

    @property
    def finished(self) -> bool:
        return all(c.output.finished for c in self.completions)


class OutputProcessor:
    """Owns the text side of every live request. `append_token` mutates the request's
    output_token_ids and decides whether it finished; `collect` drains the deltas."""

    def __init__(self, tokenizer, eos_token_ids: set[int], max_model_len: int):
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self.parents: dict[str, ParentState] = {}

    def add(self, request_id: str, prompt: str | None, children: list[Request]) -> ParentState:
        comps = []
        # One automaton per request: its n sequences share the stop strings.
        automaton = StopAutomaton(children[0].params.stop)
        for child in children:
            p = child.params
            comps.append(
                _Completion(
                    request=child,
                    output=CompletionOutput(
                        index=child.index, logprobs=[] if p.logprobs is not None else None
                    ),
                    detok=IncrementalDetokenizer(
                        self.tokenizer, child.prompt_token_ids, p.skip_special_tokens
                    ),
                    stop=StopChecker(p.stop, p.include_stop_str_in_output, automaton),
                )
            )
        state = ParentState(request_id, prompt, children[0].prompt_token_ids, comps)
        if children[0].params.prompt_logprobs is not None:
            state.prompt_logprobs = [None]
        self.parents[request_id] = state
        return state

    def to_position_logprobs(self, top: TopLogprobs) -> PositionLogprobs:
        out: PositionLogprobs = {}
        for tok, lp, rank in zip(top.token_ids, top.logprobs, top.ranks):
            if tok not in out:
                out[tok] = Logprob(lp, rank, decode_token(self.tokenizer, tok))
        return out

    def add_prompt_logprobs(
        self, request: Request, first_position: int, tops: list[TopLogprobs]
    ) -> None:
        """Record logprobs of prompt positions first_position, first_position+1, ...
        Positions already recorded (a recompute after preemption) are skipped."""
        state = self.parents[request.parent_id]
        have = len(state.prompt_logprobs)
        for pos, top in enumerate(tops, start=first_position):
            if pos == len(state.prompt_logprobs):
                state.prompt_logprobs.append(self.to_position_logprobs(top))
            elif pos > have:
                raise RuntimeError("prompt logprobs computed out of order")
        if len(state.prompt_logprobs) >= len(state.prompt_token_ids):
            state.prompt_logprobs_done = True

    def mark_prompt_done(self, request: Request) -> None:
        """A parent without prompt logprobs reports its first output once sampled."""
        state = self.parents[request.parent_id]
        state.prompt_logprobs_done = True

    def append_token(self, request: Request, token_id: int, top: TopLogprobs | None) -> bool:
        """Record a sampled token. Returns True if the sequence finished with it."""
        state = self.parents[request.parent_id]
        comp = state.completions[request.index]
        request.output_token_ids.append(token_id)
        out = comp.output
        out.token_ids.append(token_id)
        comp.delta_ids.append(token_id)
        comp.changed = True
        if top is not None:
            pos = self.to_position_logprobs(top)
            out.logprobs.append(pos)
            comp.delta_logprobs.append(pos)
            out.cumulative_logprob = (out.cumulative_logprob or 0.0) + top.logprobs[0]

        params = request.params
        n_out = len(request.output_token_ids)
        if n_out >= params.min_tokens:
            if token_id in self.eos_token_ids and not params.ignore_eos:
                return self._finish(comp, RequestStatus.FINISHED_STOPPED, None)
            if token_id in params.stop_token_ids:
                return self._finish(comp, RequestStatus.FINISHED_STOPPED, token_id)
        result = comp.stop.feed(comp.detok.add(token_id), can_stop=n_out >= params.min_tokens)
        comp.delta_text += result.emit
        if result.matched is not None:
            return self._finish(comp, RequestStatus.FINISHED_STOPPED, result.matched, flush=False)
        if n_out >= request.max_tokens or request.num_tokens >= self.max_model_len:
            return self._finish(comp, RequestStatus.FINISHED_LENGTH, None)
        return False

    def finish_without_output(self, request: Request, status: RequestStatus) -> None:
        """End a sequence that will get no more tokens (abort, or max_tokens == 0)."""
        state = self.parents.get(request.parent_id)
        if state is None:
            return
        comp = state.completions[request.index]
        if not comp.output.finished:
            self._finish(comp, status, None)

    def _finish(self, comp: _Completion, status: RequestStatus, reason, flush: bool = True) -> bool:
        if flush:
            tail = comp.detok.flush()
            comp.delta_text += comp.stop.feed(tail).emit if tail else ""
            comp.delta_text += comp.stop.flush()
        comp.output.finish_reason = status.value
        comp.output.stop_reason = reason
        comp.request.status = status
        comp.changed = True
        return True

    def collect(self, parent_ids: list[str] | None = None) -> list[RequestOutput]:
        """RequestOutputs for every parent that changed since the last call. Each carries
        only its deltas, so a step's cost does not grow with output length; a finished
        parent's output also carries the whole completions, and is then forgotten."""
        results = []
        ids = list(self.parents) if parent_ids is None else parent_ids
        for pid in ids:
            state = self.parents.get(pid)
            if state is None or not state.prompt_logprobs_done:
                continue
            changed = [c for c in state.completions if c.changed]
            if not changed and state.emitted_prompt_logprobs:
                continue
            deltas = []
            for c in changed:
                if c.delta_text:
                    c.text_parts.append(c.delta_text)
                deltas.append(
                    Delta(
                        c.output.index,
                        c.delta_text,
                        c.delta_ids,
                        c.delta_logprobs if c.output.logprobs is not None else None,
                        c.output.finish_reason,
                        c.output.stop_reason,
                    )
                )
                c.delta_text, c.delta_ids, c.delta_logprobs, c.changed = "", [], [], False
            finished = state.finished
            outputs = []
            if finished:
                for c in state.completions:
                    c.output.text = "".join(c.text_parts)
                    outputs.append(c.output)
            results.append(
                RequestOutput(
                    request_id=pid,
                    prompt=state.prompt,
                    prompt_token_ids=state.prompt_token_ids,
                    outputs=outputs,
                    finished=finished,
                    prompt_logprobs=state.prompt_logprobs,
                    num_cached_tokens=state.completions[0].request.num_cached_tokens,
                    deltas=deltas,
                    queue_time_s=state.completions[0].request.queue_time_s,
                    scheduled_at=state.completions[0].request.first_scheduled_time,
                )
            )
            state.emitted_prompt_logprobs = True
            if finished:
                del self.parents[pid]
        return results
