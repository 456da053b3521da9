"""/tokenize, /detokenize and /tokenizer_info: the model's tokenizer, remotely.

lm-evaluation-harness's remote tokenizer uses exactly these three.
"""

from __future__ import annotations

from starlette.responses import Response

from tokenmill.errors import InvalidRequestError
from tokenmill.gateway.prompts import check_token_ids, off_loop_if_large, render_chat
from tokenmill.protocol.common import check_unicode
from tokenmill.protocol.misc import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenizerInfoResponse,
)
from tokenmill.server.serving.common import ignored_fields_headers
from tokenmill.server.state import ServerState


class TokenizerService:
    """Tokenizer endpoints over the engine's tokenizer; read-only."""

    def __init__(self, state: ServerState):
        self.state = state

    async def tokenize(self, body: TokenizeRequest, response: Response) -> TokenizeResponse:
        """Token ids of `prompt`, or of `messages` rendered with the chat template; names
        ignored fields in `response`'s headers."""
        check_unicode(body)
        self.state.check_model(body.model)
        engine = self.state.engine
        response.headers.update(
            ignored_fields_headers(self.state.unknown_fields("/tokenize", body))
        )
        if (body.prompt is None) == (body.messages is None):
            raise InvalidRequestError(
                "Send exactly one of `prompt` (text) or `messages` (a chat).", param="prompt"
            )
        if body.messages is not None:
            size = sum(len(str(m.content or "")) for m in body.messages)
            text = await off_loop_if_large(
                size, render_chat, engine.tokenizer, body.messages, body.add_generation_prompt
            )
            special = bool(body.add_special_tokens)
        else:
            text = body.prompt or ""
            special = body.add_special_tokens is not False
        tokens = await off_loop_if_large(len(text), engine.tokenizer.encode, text, special)
        return TokenizeResponse(
            tokens=tokens, count=len(tokens), max_model_len=engine.max_model_len
        )

    def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        """The text of `tokens`, special tokens included (it is the inverse of /tokenize)."""
        check_unicode(body)
        self.state.check_model(body.model)
        engine = self.state.engine
        check_token_ids(body.tokens, engine.tokenizer.vocab_size, "tokens")
        return DetokenizeResponse(
            prompt=engine.tokenizer.decode(body.tokens, skip_special_tokens=False)
        )

    def info(self) -> TokenizerInfoResponse:
        """Special tokens and the chat template, for clients that tokenize themselves."""
        engine = self.state.engine
        tok = engine.tokenizer
        return TokenizerInfoResponse(
            eos_token=tok.eos_token,
            bos_token=tok.bos_token,
            pad_token=getattr(tok, "pad_token", None),
            eos_token_id=tok.eos_token_id,
            chat_template=tok.chat_template,
            vocab_size=tok.vocab_size,
            model_max_length=engine.max_model_len,
        )
