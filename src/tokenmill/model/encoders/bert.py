"""BERT-family encoder (BERT, MiniLM): post-norm transformer over padded batches.

Weights are named as in HF checkpoints (`embeddings.word_embeddings.weight`,
`encoder.layer.3.attention.self.query.weight`, ...) except that query/key/value are
stored fused as `attention.qkv` (one matmul instead of three); `fuse_weights` maps
HF-named tensors to these names. The pooler (a dense layer over [CLS]) is not built:
sentence embeddings pool the last hidden states instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokenmill.errors import InvalidRequestError
from tokenmill.model.layers.embedding import embedding

_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)")
_QKV_INDEX = {"query": 0, "key": 1, "value": 2}
_ACTIVATIONS = {"gelu": lambda x: F.gelu(x), "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


@dataclass(frozen=True)
class BertConfig:
    """The shape of a BERT encoder, from a HF config.json."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str
    """"gelu" (exact, erf) or "gelu_new" (tanh approximation)."""
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise InvalidRequestError("hidden_size must be a multiple of num_attention_heads.")
        if self.hidden_act not in _ACTIVATIONS:
            raise InvalidRequestError(
                f"Unsupported BERT activation {self.hidden_act!r}; "
                f"supported: {sorted(_ACTIVATIONS)}."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> BertConfig:
        """From config.json's dict; InvalidRequestError for a non-BERT model or one with
        relative position embeddings (not implemented)."""
        if config.get("model_type") != "bert":
            raise InvalidRequestError(
                f"Expected a BERT encoder (model_type 'bert'), got {config.get('model_type')!r}."
            )
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise InvalidRequestError("Only absolute position embeddings are supported.")
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_position_embeddings=config["max_position_embeddings"],
            type_vocab_size=config.get("type_vocab_size", 2),
            layer_norm_eps=config.get("layer_norm_eps", 1e-12),
            hidden_act=config.get("hidden_act", "gelu"),
            pad_token_id=config.get("pad_token_id", 0),
        )


class BertEmbeddings(nn.Module):
    """Word + absolute position + token type (always type 0 here), then LayerNorm."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, T) int64. Returns (B, T, hidden)."""
        t = input_ids.shape[1]
        h = self.word_embeddings(input_ids)  # (B, T, hidden)
        h = h + self.position_embeddings.weight[:t]  # (T, hidden) broadcast over B
        h = h + self.token_type_embeddings.weight[0]  # (hidden,): single-segment input
        return self.LayerNorm(h)


class BertLayer(nn.Module):
    """Self-attention then feed-forward, each followed by residual add and LayerNorm
    (post-norm, as in the original BERT)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_heads, cfg.head_dim
        h = cfg.hidden_size
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.attn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(h, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, h)
        self.ffn_norm = nn.LayerNorm(h, eps=cfg.layer_norm_eps)
        self.act = _ACTIVATIONS[cfg.hidden_act]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, hidden); mask: (B, 1, 1, T) bool, True where a key is a real token.
        Returns (B, T, hidden). Padded positions compute garbage that no real position
        attends to and that pooling ignores."""
        b, t, hidden = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hd) x3
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hd)
        ctx = ctx.transpose(1, 2).reshape(b, t, hidden)  # (B, T, hidden)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ffn_norm(x + self.ffn_out(self.act(self.ffn_in(x))))


class BertModel(nn.Module):
    """Embeddings and encoder layers; returns the last hidden states."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, T) int64, right-padded; attention_mask: (B, T), 1 for real
        tokens. Returns the last hidden states (B, T, hidden). Mutates nothing."""
        mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        h = self.embeddings(input_ids)  # (B, T, hidden)
        for layer in self.layers:
            h = layer(h, mask)
        return h

    @staticmethod
    def fuse_weights(
        named: Iterable[tuple[str, torch.Tensor]],
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """HF-named tensors in, this module's state-dict entries out. query/key/value of a
        layer are held until all three arrive, then concatenated; the pooler and the
        `position_ids` buffer are dropped. ValueError if a layer lacks one of q/k/v."""
        renames = {
            "attention.output.dense": "attn_out",
            "attention.output.LayerNorm": "attn_norm",
            "intermediate.dense": "ffn_in",
            "output.dense": "ffn_out",
            "output.LayerNorm": "ffn_norm",
        }
        pending: dict[str, dict[int, torch.Tensor]] = {}
        for name, tensor in named:
            name = name.removeprefix("bert.")
            if name.startswith("pooler.") or name.endswith("position_ids"):
                continue
            match = _QKV.fullmatch(name)
            if match is not None:
                layer, part, leaf = match.groups()
                target = f"layers.{layer}.qkv.{leaf}"
                shards = pending.setdefault(target, {})
                shards[_QKV_INDEX[part]] = tensor
                if len(shards) == 3:
                    yield target, torch.cat([shards[0], shards[1], shards[2]], dim=0)
                    del pending[target]
                continue
            if name.startswith("encoder.layer."):
                layer, _, rest = name.removeprefix("encoder.layer.").partition(".")
                module, _, leaf = rest.rpartition(".")
                if module not in renames:
                    raise ValueError(f"Unexpected BERT tensor {name!r}.")
                name = f"layers.{layer}.{renames[module]}.{leaf}"
            yield name, tensor
        if pending:
            raise ValueError(f"Checkpoint is missing query/key/value parts of {sorted(pending)}.")
