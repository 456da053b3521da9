"""The personal-data guardrail: `--guard pii=flag|redact|block`, on input and output.

Input: every message's text (or the prompt) is scanned before anything tokenizes it.
`redact` replaces each span with `<ENTITY_TYPE>` in the body the model receives (so
`echo` shows the redacted prompt); `block` refuses the call (400
`content_policy_violation`); `flag` records what was found and changes nothing.

Output: each choice's text goes through a StreamRedactor, which holds back the
unfinished sentence (at most 400 characters) so a span cut across deltas never leaks,
not even partly. `redact` sends the redacted text; `block` ends a choice that turns out
to hold personal data with `finish_reason: content_filter`, sending none of that
segment; `flag` sends the text unchanged and records what it held. Output logprobs
name tokens one by one and would leak what the text hides, so `redact` and `block`
refuse them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.call import GENERATION_KINDS, ChoiceDelta
from tokenmill.gateway.guard_injection import ContentPolicyError
from tokenmill.gateway.guardrails import PiiDetector, StreamRedactor
from tokenmill.gateway.policy import CallContext, Policy


class PiiPolicy(Policy):
    """Finds personal data in what goes to the model and what comes back."""

    name = "pii"

    def __init__(self, detector: PiiDetector, mode: str):
        self.detector = detector
        self.mode = mode

    async def pre_call(self, ctx: CallContext) -> None:
        if ctx.call.kind not in GENERATION_KINDS:
            return
        body = ctx.body
        wants_logprobs = body.logprobs is True or (
            ctx.call.kind == "completion" and body.logprobs is not None
        )
        if self.mode in ("redact", "block") and wants_logprobs:
            raise InvalidRequestError(
                f"logprobs cannot be combined with the pii={self.mode} guardrail: token "
                "logprobs would show the personal data the text hides. Send the request "
                "without logprobs.",
                param="logprobs",
                code="unsupported_with_guardrail",
            )
        texts, rebuild = _texts_of(ctx)
        scans = await asyncio.to_thread(lambda: [self.detector.scan(t) for t in texts])
        found = sorted({t for s in scans for t in s.entity_types})
        if not found:
            ctx.decisions[self.name] = "pass"
            return
        if self.mode == "block":
            ctx.decisions[self.name] = "blocked:" + ",".join(found)
            raise ContentPolicyError(
                "The request was blocked by the pii guardrail: the input contains "
                f"{', '.join(found)}. Remove the personal data and send it again.",
                param="messages" if ctx.call.kind == "chat" else "prompt",
            )
        if self.mode == "redact":
            ctx.body = rebuild([s.text for s in scans])
            ctx.invalidate_prepared()
            ctx.decisions[self.name] = "redacted:" + ",".join(found)
        else:
            ctx.decisions[self.name] = "flagged:" + ",".join(found)

    def wrap_stream(
        self, ctx: CallContext, deltas: AsyncIterator[ChoiceDelta]
    ) -> AsyncIterator[ChoiceDelta]:
        return self._filter(ctx, deltas)

    async def _filter(
        self, ctx: CallContext, deltas: AsyncIterator[ChoiceDelta]
    ) -> AsyncIterator[ChoiceDelta]:
        redactors: dict[tuple[int, int], StreamRedactor] = {}
        cut: set[tuple[int, int]] = set()
        found: set[str] = set()
        try:
            async for delta in deltas:
                key = (delta.prompt_index, delta.index)
                if key in cut:  # a filtered choice sends nothing more; its tokens still count
                    yield ChoiceDelta(delta.prompt_index, delta.index, "", delta.token_ids)
                    continue
                redactor = redactors.setdefault(key, StreamRedactor(self.detector))
                final = delta.finish_reason is not None
                safe = await asyncio.to_thread(_advance, redactor, delta.text, final)
                found.update(redactor.entity_types)
                if self.mode == "flag":
                    yield delta
                    continue
                if self.mode == "block" and redactor.changed:
                    cut.add(key)
                    yield ChoiceDelta(
                        delta.prompt_index, delta.index, "", delta.token_ids, None, "content_filter"
                    )
                    continue
                delta.text = safe
                yield delta
        finally:
            if found:
                verb = {"flag": "flagged", "redact": "redacted", "block": "filtered"}[self.mode]
                ctx.decisions["pii_output"] = f"{verb}:" + ",".join(sorted(found))


def _advance(redactor: StreamRedactor, text: str, final: bool) -> str:
    safe = redactor.feed(text)
    return safe + redactor.flush() if final else safe


def _texts_of(ctx: CallContext):
    """The body's texts, and a function that builds the body back from new texts."""
    body = ctx.body
    if ctx.call.kind == "chat":
        slots = []
        for i, message in enumerate(body.messages):
            if isinstance(message.content, str):
                slots.append((i, None, message.content))
            elif isinstance(message.content, list):
                for j, part in enumerate(message.content):
                    if part.text:
                        slots.append((i, j, part.text))

        def rebuild(texts: list[str]):
            messages = [m.model_copy(deep=True) for m in body.messages]
            for (i, j, _), text in zip(slots, texts):
                if j is None:
                    messages[i].content = text
                else:
                    messages[i].content[j].text = text
            return body.model_copy(update={"messages": messages})

        return [s[2] for s in slots], rebuild
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt], lambda texts: body.model_copy(update={"prompt": texts[0]})
    positions = [i for i, p in enumerate(prompt) if isinstance(p, str)]

    def rebuild_list(texts: list[str]):
        items = list(prompt)
        for i, text in zip(positions, texts):
            items[i] = text
        return body.model_copy(update={"prompt": items})

    return [prompt[i] for i in positions], rebuild_list
