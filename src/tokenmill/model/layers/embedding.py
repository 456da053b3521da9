"""nn.Embedding that a loader can build under `torch.device("meta")` cheaply."""

from __future__ import annotations

import torch
from torch import nn


def embedding(num_embeddings: int, embedding_dim: int) -> nn.Embedding:
    """nn.Embedding(num_embeddings, embedding_dim); on the meta device (a loader building
    a model to fill from a checkpoint) without nn.Embedding's random init. There that
    init's `normal_` runs through torch's reference ops, whose first call imports
    torch._dynamo and sympy: ~800 modules, which made a served SmolLM2's start ~1.4 s
    longer and its RSS ~100 MB larger. Anywhere else it is nn.Embedding as it stands."""
    if torch.get_default_device().type == "meta":
        weight = torch.empty(num_embeddings, embedding_dim)  # a shell: no storage
        return nn.Embedding(num_embeddings, embedding_dim, _weight=weight)
    return nn.Embedding(num_embeddings, embedding_dim)
