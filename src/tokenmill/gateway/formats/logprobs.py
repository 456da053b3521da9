"""The engine's per-position logprobs in the two shapes OpenAI clients read.

Completions use the legacy parallel lists (`tokens`, `token_logprobs`, `top_logprobs`,
`text_offset`) that lm-evaluation-harness scores with; chat uses `content` entries with
`top_logprobs` lists. JSON has no -inf, so impossible tokens report -9999.0.
"""

from __future__ import annotations

import math

from tokenmill.engine.outputs import PositionLogprobs
from tokenmill.gateway.engine_client import TokenizerClient
from tokenmill.protocol.chat import ChatLogprob, ChatLogprobContent
from tokenmill.protocol.completion import CompletionLogprobs

FLOOR = -9999.0


def _clamp(value: float) -> float:
    return FLOOR if math.isnan(value) else max(value, FLOOR)


def _token_text(
    tokenizer: TokenizerClient | None, token_id: int, pos: PositionLogprobs | None
) -> str:
    if pos is not None and token_id in pos:
        return pos[token_id].decoded_token
    if tokenizer is None:  # a remote backend's token: only its logprob entry names it
        return ""
    return tokenizer.decode([token_id], skip_special_tokens=False)


def append_completion_logprobs(
    out: CompletionLogprobs,
    tokenizer: TokenizerClient | None,
    token_ids: list[int],
    positions: list[PositionLogprobs | None],
    text_offset: int,
) -> int:
    """Appends one entry per token to `out`; returns the text offset after the last token.

    A position without logprobs (the first prompt token) gets null `token_logprobs` and
    `top_logprobs`, which is what lm-eval expects. Each `top_logprobs` dict holds the
    top alternatives plus the chosen token, so `max(top.values())` tells greedy-ness.
    """
    for token_id, pos in zip(token_ids, positions):
        text = _token_text(tokenizer, token_id, pos)
        out.tokens.append(text)
        out.text_offset.append(text_offset)
        text_offset += len(text)
        if pos is None or token_id not in pos:
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            continue
        out.token_logprobs.append(_clamp(pos[token_id].logprob))
        top = {}
        for lp in sorted(pos.values(), key=lambda lp: lp.rank):
            top.setdefault(lp.decoded_token, _clamp(lp.logprob))
        out.top_logprobs.append(top)
    return text_offset


def chat_logprobs(
    tokenizer: TokenizerClient | None,
    token_ids: list[int],
    positions: list[PositionLogprobs | None],
    num_top: int,
) -> list[ChatLogprobContent]:
    """One `content` entry per generated token, with its `num_top` best alternatives."""
    content = []
    for token_id, pos in zip(token_ids, positions):
        text = _token_text(tokenizer, token_id, pos)
        logprob = _clamp(pos[token_id].logprob) if pos and token_id in pos else FLOOR
        top = []
        if pos:
            ranked = sorted(pos.values(), key=lambda lp: lp.rank)
            top = [
                ChatLogprob(
                    token=lp.decoded_token,
                    logprob=_clamp(lp.logprob),
                    bytes=list(lp.decoded_token.encode("utf-8")),
                )
                for lp in ranked
                if lp.rank <= num_top
            ][:num_top]
        content.append(
            ChatLogprobContent(
                token=text,
                logprob=logprob,
                bytes=list(text.encode("utf-8")),
                top_logprobs=top,
            )
        )
    return content
