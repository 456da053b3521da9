"""Where a call's tokens come from: a backend prepares a call and streams its deltas.

`LocalBackend` is an engine in this process. Fallback targets (`fallback.py`) add a
remote OpenAI-compatible server and chain backends; the pipeline sees one interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.call import ChoiceDelta, PromptInfo
from tokenmill.gateway.engine_client import EngineClient
from tokenmill.gateway.generation import GenerationRun
from tokenmill.gateway.policy import CallContext, Prepared
from tokenmill.gateway.prompts import chat_prompt, completion_items, completion_prompts
from tokenmill.protocol.tools import history_messages, template_tools


class BackendStream(Protocol):
    """A started call: its prompts as the model saw them, then its deltas."""

    prompts: list[PromptInfo]

    def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Every choice's deltas until all finished; raises a TokenmillError mid-way."""

    def close(self) -> None:
        """Stops what is unfinished (frees its engine work). Never blocks."""


class Backend(Protocol):
    name: str
    """Who answers, for the x-tokenmill-served-by header ("local", or a URL)."""

    async def prepare(self, ctx: CallContext) -> Prepared:
        """Tokenizes the call's prompts and resolves its sampling params."""

    async def start(self, ctx: CallContext) -> BackendStream:
        """Starts generating; admission errors (context length, queue full) raise here,
        before anything was streamed."""


class LocalBackend:
    """A model served by an engine in this process."""

    def __init__(self, engine: EngineClient, timeout_s: float | None = None, name: str = "local"):
        self.engine = engine
        self.timeout_s = timeout_s
        self.name = name

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    async def prepare(self, ctx: CallContext) -> Prepared:
        """The cheap admission checks first (n, stop strings, how many sequences the
        call makes, each prompt's length in characters), then the tokenization."""
        body = ctx.body
        tokenizer = self.engine.tokenizer
        inputs = getattr(self.engine, "inputs", None)
        params = body.to_sampling_params(self.engine.sampling_defaults)
        check = None
        if inputs is not None:
            inputs.check_params(params)
            count = 1 if ctx.call.kind == "chat" else len(completion_items(body.prompt))
            cap = inputs.capacity.max_sequences
            if cap is not None and count * params.n > cap:
                raise InvalidRequestError(
                    f"This request makes {count * params.n} sequences ({count} prompts x "
                    f"n={params.n}); this server runs and queues at most {cap} at once "
                    "(--max-num-seqs plus --max-queue). Split it into smaller requests.",
                    param="prompt" if count > 1 else "n",
                    code="exceeds_capacity",
                )
            check = inputs.check_prompt_text
        if ctx.call.kind == "chat":
            mode = body.tool_mode()
            if getattr(tokenizer, "native_tools", False):
                # The template writes the tools and the tool turns in the <tool_call>
                # spelling the tool grammar generates.
                messages, tools = body.messages, template_tools(mode)
            else:
                messages, tools = history_messages(body.messages, mode), None
            prompts = [
                await chat_prompt(tokenizer, messages, body.add_generation_prompt, check, tools)
            ]
        else:
            prompts = await completion_prompts(tokenizer, body.prompt, check)
        return Prepared(prompts, params)

    async def start(self, ctx: CallContext, prepared: Prepared | None = None) -> BackendStream:
        """Starts the call; `prepared` defaults to the context's (this model's) own."""
        prepared = prepared or await ctx.prepared()
        priority = ctx.call.priority if ctx.call.priority is not None else ctx.body.priority
        run = GenerationRun(
            self.engine,
            ctx.call.request_id,
            prepared.prompts,
            prepared.params,
            prompt_param="messages" if ctx.call.kind == "chat" else "prompt",
            priority=priority,
            timeout_s=self.timeout_s,
            caller=ctx.call.caller.name,
        )
        await run.start()
        return _LocalStream(run)


class _LocalStream:
    """A GenerationRun's outputs as ChoiceDeltas."""

    def __init__(self, run: GenerationRun):
        self.run = run
        self.prompts = [
            PromptInfo(
                token_ids=p.token_ids,
                text=p.text,
                prompt_logprobs=run.prompt_logprobs[i],
                num_cached_tokens=run.final[i].num_cached_tokens if run.final[i] else 0,
                queue_time_s=run.final[i].queue_time_s if run.final[i] else None,
                scheduled_at=run.final[i].scheduled_at if run.final[i] else None,
            )
            for i, p in enumerate(run.prompts)
        ]

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        async for p_index, out in self.run.outputs():
            for d in out.deltas:
                yield ChoiceDelta(
                    p_index,
                    d.index,
                    d.text,
                    d.token_ids,
                    d.logprobs,
                    d.finish_reason,
                    d.stop_reason,
                )

    def close(self) -> None:
        self.run.close()
