"""The edge profile: the smallest footprint that still serves correct tokens.

It is data: which `tokenmill serve` settings it sets (names as in cli/settings.py), and
which optional components it leaves out. `tokenmill serve --profile edge` applies
`EDGE.settings` beneath explicit flags once the settings rewrite can take a profile;
`benchmarks/edge_profile.py` measures resident memory and speed under it.

- int8 weights (W8A8; a directory from `tokenmill optimize quantize --method int8`
  loads them directly, without the float copy a load-time quantization passes through);
- a 64 MiB KV cache (bfloat16 K/V under int8: about 11,000 tokens for SmolLM2-135M),
  at most 4 sequences at once and 2,048 tokens of context;
- one compute thread;
- no optional components (guardrail or embedding models, tracing exporters, response
  cache) loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Profile:
    """A named bundle of serving settings."""

    name: str
    settings: MappingProxyType
    """Setting name (as `tokenmill serve` flags spell them, underscores) -> value."""
    without: tuple[str, ...] = field(default=())
    """Optional components the profile does not load."""

    def engine_kwargs(self) -> dict[str, Any]:
        """The settings as `tokenmill.LLM` keyword arguments."""
        return dict(self.settings)


EDGE = Profile(
    name="edge",
    settings=MappingProxyType(
        {
            "quantization": "int8",
            "kv_cache_memory_gib": 0.0625,
            "max_num_seqs": 4,
            "max_num_batched_tokens": 256,
            "max_model_len": 2048,
            "num_threads": 1,
            "enable_prefix_caching": True,
        }
    ),
    without=("guardrail models", "embedding model", "tracing exporter", "response cache"),
)
PROFILES = {EDGE.name: EDGE}
