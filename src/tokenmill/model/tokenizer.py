"""The tokenizer: a `tokenizers.Tokenizer` plus special tokens and the chat template.

Built from a HF directory (tokenizer.json, tokenizer_config.json) or from a GGUF file's
`tokenizer.*` metadata, which holds a byte-level BPE vocabulary and merges from which
the same tokenizer is rebuilt.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as RustTokenizer

from tokenmill.errors import InvalidRequestError
from tokenmill.model.chat_template import FALLBACK_TEMPLATES, ChatTemplate
from tokenmill.model.sentencepiece import sentencepiece_backend

# GGUF token types (llama.cpp's llama_token_type).
_CONTROL, _USER_DEFINED = 3, 4

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {"llama-bpe": _LLAMA3_SPLIT, "llama3": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to the printable character that spells it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
    """How text is split before BPE, by llama.cpp's `tokenizer.ggml.pre` name; GPT-2's
    split for names not listed."""
    if pre in _SPLITS:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLITS[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return byte_level


def _byte_level_backend(metadata: Mapping[str, Any]) -> RustTokenizer:
    """GPT-2 style byte-level BPE from a GGUF's vocabulary and merges (no added tokens)."""
    spelling = _bytes_to_unicode()
    alphabet = set(spelling.values())
    tokens = [
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8"))
        for t in metadata["tokenizer.ggml.tokens"]
    ]
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    backend = RustTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    backend.pre_tokenizer = _pre_tokenizer(metadata.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    return backend


class Tokenizer:
    """Text <-> token ids, special tokens and the chat template of one model.

    Immutable after construction; safe to share between threads for encode/decode.
    """

    def __init__(
        self,
        backend: RustTokenizer,
        bos_token: str | None,
        eos_token: str | None,
        chat_template: str | None,
    ) -> None:
        self.backend = backend
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.bos_token_id = None if bos_token is None else backend.token_to_id(bos_token)
        self.eos_token_id = None if eos_token is None else backend.token_to_id(eos_token)
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.all_special_ids: set[int] = {
            i for i, t in backend.get_added_tokens_decoder().items() if t.special
        }
        first = backend.encode("", add_special_tokens=True).ids
        self.add_bos = self.bos_token_id is not None and first[:1] == [self.bos_token_id]
        self.chat_template = chat_template
        self._template = (
            None
            if chat_template is None
            else ChatTemplate(chat_template, {"bos_token": bos_token, "eos_token": eos_token})
        )

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`. Special tokens written in the text become their ids;
        add_special_tokens adds BOS when the model wants it."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of `ids`; an incomplete UTF-8 sequence at the end decodes to U+FFFD."""
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        """The vocabulary strings of `ids` (byte-level spelling, e.g. "Ġthe")."""
        return [self.backend.id_to_token(i) for i in ids]

    @property
    def native_tools(self) -> bool:
        """Whether the chat template renders tools itself (chat_template.speaks_hermes_tools);
        otherwise tools go through the fallback prompt in protocol/tools.py."""
        return self._template is not None and self._template.native_tools

    def with_chat_template(self, source: str) -> Tokenizer:
        """A copy that renders chats with `source` (`--chat-template`); self is unchanged."""
        twin = copy.copy(self)
        twin.chat_template = source
        twin._template = ChatTemplate(
            source, {"bos_token": self.bos_token, "eos_token": self.eos_token}
        )
        return twin

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """The prompt text for `messages`; `tools` (OpenAI function tools) are passed to
        the template when given. InvalidRequestError when the model has no template or
        the template rejects the messages."""
        if self._template is None:
            raise InvalidRequestError(
                "This model has no chat template; use the completions endpoint instead.",
                param="messages",
            )
        extra = {} if tools is None else {"tools": tools}
        return self._template.render(messages, add_generation_prompt=add_generation_prompt, **extra)

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any]) -> Tokenizer:
        """From a GGUF's `tokenizer.*` key/values: byte-level BPE ("gpt2") or SentencePiece
        BPE ("llama", see tokenmill.model.sentencepiece). Control tokens become special
        added tokens, user-defined ones plain added tokens, so text containing them maps
        to their ids. A file without a chat template gets its architecture's fallback
        (chat_template.FALLBACK_TEMPLATES), if there is one."""
        kind = metadata.get("tokenizer.ggml.model")
        raw = metadata["tokenizer.ggml.tokens"]
        types = metadata.get("tokenizer.ggml.token_type") or []
        control = [i for i, t in enumerate(types) if t == _CONTROL]
        user = [i for i, t in enumerate(types) if t == _USER_DEFINED]
        if kind == "gpt2":
            backend = _byte_level_backend(metadata)
            alphabet = set(_bytes_to_unicode().values())
            # A control token spelled outside the byte alphabet is a llama.cpp label for a
            # byte, not a real special token.
            control = [i for i in control if set(raw[i]) <= alphabet]
        elif kind == "llama":
            backend = sentencepiece_backend(metadata)
            # Runs of spaces are pieces the BPE reaches by merging "▁"s; added as raw text
            # they would be given new ids past the vocabulary.
            user = [i for i in user if " " not in raw[i]]
        else:
            raise InvalidRequestError(
                f"GGUF tokenizer type {kind!r} is not supported; byte-level BPE ('gpt2') and "
                "SentencePiece BPE ('llama') are. Use the model's HF directory instead.",
                param="model",
            )
        backend.add_special_tokens(
            [AddedToken(raw[i], normalized=False, special=True) for i in control]
        )
        backend.add_tokens([AddedToken(raw[i], normalized=False, special=False) for i in user])

        def token(key: str) -> str | None:
            i = metadata.get(f"tokenizer.ggml.{key}")
            return None if i is None else raw[int(i)]

        bos = token("bos_token_id")
        if metadata.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
            bos_id = int(metadata["tokenizer.ggml.bos_token_id"])
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
            )
        template = metadata.get("tokenizer.chat_template") or FALLBACK_TEMPLATES.get(
            metadata.get("general.architecture", "")
        )
        return cls(backend, bos, token("eos_token_id"), template)

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        """From a HF model directory's tokenizer.json and tokenizer_config.json (and
        chat_template.jinja, where the template lives in newer repos)."""
        path = Path(path)
        backend = RustTokenizer.from_file(str(path / "tokenizer.json"))
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        template = config.get("chat_template")
        if isinstance(template, list):
            named = {t["name"]: t["template"] for t in template}
            template = named.get("default")
        jinja_file = path / "chat_template.jinja"
        if template is None and jinja_file.exists():
            template = jinja_file.read_text()

        def token(key: str) -> str | None:
            value = config.get(key)
            return value.get("content") if isinstance(value, dict) else value

        return cls(backend, token("bos_token"), token("eos_token"), template)
