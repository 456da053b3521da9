"""The part of the engine the server uses, stated as protocols.

`tokenmill.engine.async_engine.AsyncEngine` satisfies them; unit tests pass a small fake.
Writing the surface down keeps the server honest about what it relies on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from tokenmill.engine.outputs import RequestOutput
from tokenmill.sampling_params import SamplingParams


class TokenizerClient(Protocol):
    """Text <-> token ids, and the chat template."""

    eos_token: str | None
    bos_token: str | None
    eos_token_id: int | None
    chat_template: str | None
    vocab_size: int

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str: ...


class EngineClient(Protocol):
    """An engine the server can drive from the event loop."""

    tokenizer: TokenizerClient
    model_name: str
    max_model_len: int
    is_ready: bool

    async def start(self) -> None:
        """Starts the engine thread and warms up; afterwards is_ready is True."""

    def generate(
        self,
        request_id: str,
        params: SamplingParams,
        prompt: str | None = None,
        prompt_token_ids: list[int] | None = None,
        priority: int = 0,
    ) -> AsyncIterator[RequestOutput]:
        """Streams a request's outputs; raises its validation error at the first step.

        Closing the iterator early (aclose or cancellation) aborts the request.
        """

    async def abort(self, request_id: str) -> None:
        """Stops a request and frees its KV blocks."""

    def stats(self) -> Any:
        """A dataclass of counters (running, waiting, KV blocks used, ...)."""

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stops admitting; lets in-flight requests finish, aborts what remains after grace."""
