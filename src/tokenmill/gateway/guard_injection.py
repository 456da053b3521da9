"""The prompt-injection guardrail: `--guard injection=flag|block`.

Scores the user's own text with the packaged classifier (NanoGuard). It reads the
original body, never the redacted one: the classifier takes placeholders such as
`<EMAIL_ADDRESS>` for injections (docs/guardrails.md measured 44 of 77 benign messages
flagged after redaction, 0 before). `flag` records the decision and lets the call
through; `block` refuses it with 400 `content_policy_violation`.
"""

from __future__ import annotations

import asyncio

from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.call import GENERATION_KINDS, Body
from tokenmill.gateway.guardrails import InjectionClassifier
from tokenmill.gateway.policy import CallContext, Policy


class ContentPolicyError(InvalidRequestError):
    """A guardrail refused the input (HTTP 400)."""

    default_code = "content_policy_violation"


def user_texts(kind: str, body: Body) -> list[str]:
    """The text a user wrote: chat `user` messages (text parts joined), or the text
    prompts of a completion."""
    if kind == "chat":
        texts = []
        for message in body.messages:
            if message.role != "user":
                continue
            content = message.content
            if isinstance(content, list):
                content = "\n".join(p.text or "" for p in content)
            if content:
                texts.append(content)
        return texts
    prompt = body.prompt
    items = [prompt] if isinstance(prompt, str) else prompt
    return [p for p in items if isinstance(p, str) and p]


class InjectionPolicy(Policy):
    """Flags or blocks calls whose user text the classifier scores as an injection."""

    name = "injection"

    def __init__(self, classifier: InjectionClassifier, mode: str):
        self.classifier = classifier
        self.mode = mode

    async def pre_call(self, ctx: CallContext) -> None:
        if ctx.call.kind not in GENERATION_KINDS:
            return
        texts = user_texts(ctx.call.kind, ctx.call.body)
        if not texts:
            return
        scores = await asyncio.to_thread(self.classifier.score, texts)
        score = max(scores)
        flagged = score >= self.classifier.config.threshold
        ctx.decisions[self.name] = (
            ("blocked" if self.mode == "block" else "flagged") if flagged else "pass"
        )
        ctx.decisions["injection_score"] = f"{score:.3f}"
        if flagged and self.mode == "block":
            raise ContentPolicyError(
                f"The request was blocked by the injection guardrail: the classifier scored "
                f"the user text {score:.2f} (threshold {self.classifier.config.threshold}). "
                "Rephrase the request without instructions aimed at the model's rules.",
                param="messages" if ctx.call.kind == "chat" else "prompt",
            )
