"""A small, deterministic stand-in for AsyncEngine, for testing the HTTP layer alone.

Tokens are UTF-8 bytes (id = byte + 3; 1 is BOS, 2 is EOS). Completion `i` of a request
spells `script` (prefixed by `i` when n > 1), one token per step, then ends with EOS
("stop") unless max_tokens ends it first ("length"). It honours the engine contract the
server relies on: the real admission checks (InputProcessor) at the first step, deltas in
every output and whole completions only in the last, and abort when the consumer
stops iterating early, which it records in `aborted`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from tokenmill.config import LimitsConfig
from tokenmill.engine.input_processor import Capacity, InputProcessor
from tokenmill.engine.outputs import CompletionOutput, Delta, Logprob, RequestOutput
from tokenmill.engine.request import GenerationRequest
from tokenmill.errors import QueueFullError
from tokenmill.sampling_params import SamplingDefaults, SamplingParams

BOS, EOS, OFFSET = 1, 2, 3


class FakeTokenizer:
    eos_token = "</s>"
    bos_token = "<s>"
    pad_token = None
    eos_token_id = EOS
    chat_template = "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}"
    vocab_size = 256 + OFFSET

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [b + OFFSET for b in text.encode("utf-8")]
        return [BOS, *ids] if add_special_tokens else ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        out = bytearray()
        for i in ids:
            if i >= OFFSET:
                out.append(i - OFFSET)
            elif not skip_special_tokens:
                out += {BOS: b"<s>", EOS: b"</s>"}.get(i, b"")
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True
    ) -> str:
        text = "".join(f"<{m['role']}>{m['content']}\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")


@dataclass
class FakeStats:
    num_running: int = 0
    num_waiting: int = 0
    kv_blocks_total: int = 100
    kv_blocks_used: int = 0


@dataclass
class Call:
    request_id: str
    params: SamplingParams
    prompt_token_ids: list[int]
    priority: int


@dataclass
class FakeEngine:
    script: str = "Hello world"
    max_model_len: int = 128
    step_delay_s: float = 0.0
    queue_full: bool = False
    model_name: str = "fake-model"
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)
    is_ready: bool = False
    calls: list[Call] = field(default_factory=list)
    running: set[str] = field(default_factory=set)
    aborted: list[str] = field(default_factory=list)
    shutdown_grace: float | None = None
    default_max_tokens: int = 64
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)
    precision: None = None
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    max_sequences: int | None = None
    """Running plus queued sequences at most, as the real engine's --max-num-seqs plus
    --max-queue; None: no limit."""
    _closing: bool = False
    _inputs: InputProcessor | None = None

    @property
    def inputs(self) -> InputProcessor:
        """The real admission checks, over this engine's tokenizer and limits."""
        if self._inputs is None:
            self._inputs = InputProcessor(
                self.tokenizer,
                self.tokenizer.vocab_size,
                self.max_model_len,
                self.default_max_tokens,
                self.limits,
                Capacity(self.max_sequences),
            )
        return self._inputs

    async def start(self) -> None:
        self.is_ready = True

    def stats(self) -> FakeStats:
        return FakeStats(num_running=len(self.running), kv_blocks_used=len(self.running))

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def shutdown(self, grace_s: float = 10.0) -> None:
        self.shutdown_grace = grace_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.running and loop.time() < deadline:
            await asyncio.sleep(0.01)
        self._closing = True

    def _logprobs(self, token: int, k: int) -> dict[int, Logprob]:
        alt = OFFSET + ord("#")
        out = {token: Logprob(-0.25, 1, self.tokenizer.decode([token]))}
        if k >= 1 and alt != token:
            out[alt] = Logprob(-2.0, 2, "#")
        return out

    async def generate(self, req: GenerationRequest):
        params, request_id, prompt = req.params, req.request_id, req.prompt
        inputs = self.inputs
        self.calls.append(Call(request_id, params, list(req.prompt_token_ids or []), req.priority))
        if self.queue_full:
            raise QueueFullError("The waiting queue is full (1 waiting).", retry_after_s=1.5)
        admitted = inputs.process(req)
        ids, limit = admitted.token_ids, admitted.max_tokens
        texts = [(f"{i}" if params.n > 1 else "") + self.script for i in range(params.n)]
        outs = [
            CompletionOutput(index=i, logprobs=[] if params.logprobs is not None else None)
            for i in range(params.n)
        ]
        prompt_lps = None
        if params.prompt_logprobs is not None:
            prompt_lps = [None] + [self._logprobs(t, params.prompt_logprobs) for t in ids[1:]]
        self.running.add(request_id)
        finished = False
        arrived, scheduled = time.monotonic(), None
        try:
            while True:
                await asyncio.sleep(self.step_delay_s)
                scheduled = scheduled or time.monotonic()
                deltas = []
                for out, text in zip(outs, texts):
                    if out.finished:
                        continue
                    if self._closing:
                        out.finish_reason = "abort"
                        deltas.append(Delta(out.index, "", [], None, "abort"))
                        continue
                    if len(out.token_ids) >= limit:
                        out.finish_reason = "length"
                        deltas.append(Delta(out.index, "", [], None, "length"))
                        continue
                    pos = len(out.token_ids)
                    if pos < len(text):
                        tok, piece, reason = OFFSET + ord(text[pos]), text[pos], None
                    else:
                        tok, piece, reason = EOS, "", "stop"
                    lps = None
                    if params.logprobs is not None:
                        lps = [self._logprobs(tok, params.logprobs)]
                        out.logprobs.append(lps[0])
                    out.token_ids.append(tok)
                    out.text += piece
                    out.finish_reason = reason
                    deltas.append(Delta(out.index, piece, [tok], lps, reason))
                finished = all(o.finished for o in outs)
                yield RequestOutput(
                    request_id=request_id,
                    prompt=prompt,
                    prompt_token_ids=ids,
                    outputs=outs if finished else [],
                    finished=finished,
                    prompt_logprobs=prompt_lps,
                    deltas=deltas,
                    queue_time_s=scheduled - arrived,
                    scheduled_at=scheduled,
                )
                if finished:
                    return
        finally:
            self.running.discard(request_id)
            if not finished:
                self.aborted.append(request_id)
