"""The reference profile: what normal traffic looked like, per signal; JSON on disk.

Built from the first N live observations, or offline from a JSONL file of past
requests with `build_profile` (what `tokenmill drift profile` runs). Embeddings are
stored as base64 little-endian float32, so a 200-request profile is about 0.5 MB.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokenmill.errors import ConfigError
from tokenmill.observability.drift.records import DriftRecord, Observation, observe
from tokenmill.observability.drift.signals import SIGNALS, SIGNALS_BY_NAME, Column, column

FORMAT = "tokenmill-drift-profile"
VERSION = 1

EmbedPrompts = Callable[[Sequence[str]], np.ndarray]
"""Texts -> (n, dim) float32 embeddings, truncating long texts; e.g.
`lambda t: encoder.embed(t, truncate=True).vectors`."""


@dataclass(frozen=True)
class Profile:
    """Reference values per signal (only the known ones) and where they came from."""

    columns: dict[str, Column]
    size: int
    """Observations the profile was built from."""
    encoder: str | None = None
    """The embedding model's name; live embeddings must come from the same model."""
    created: float = field(default_factory=time.time)

    @classmethod
    def from_observations(
        cls, observations: Sequence[Observation], encoder: str | None = None
    ) -> Profile:
        return cls({s.name: column(s, observations) for s in SIGNALS}, len(observations), encoder)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        signals: dict[str, object] = {}
        for name, values in self.columns.items():
            if SIGNALS_BY_NAME[name].values == "vector":
                arr = np.asarray(values, dtype="<f4")
                signals[name] = {
                    "shape": list(arr.shape),
                    "float32_base64": base64.b64encode(arr.tobytes()).decode("ascii"),
                }
            elif SIGNALS_BY_NAME[name].values == "number":
                signals[name] = np.asarray(values).tolist()
            else:
                signals[name] = list(values)
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "encoder": self.encoder,
            "size": self.size,
            "signals": signals,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Profile:
        """Inverse of `to_dict`; ConfigError for another format or version, or
        for malformed columns."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ConfigError(f"Not a drift profile (expected format {FORMAT!r}).")
        if data.get("version") != VERSION:
            raise ConfigError(
                f"Drift profile version {data.get('version')!r} is not supported; this "
                f"tokenmill reads version {VERSION}. Rebuild it with `tokenmill drift profile`."
            )
        columns: dict[str, Column] = {}
        try:
            for name, raw in data["signals"].items():
                if name not in SIGNALS_BY_NAME:
                    raise ConfigError(f"Drift profile has an unknown signal {name!r}.")
                kind = SIGNALS_BY_NAME[name].values
                if kind == "vector":
                    flat = np.frombuffer(base64.b64decode(raw["float32_base64"]), dtype="<f4")
                    columns[name] = flat.reshape(raw["shape"]).astype(np.float32)
                elif kind == "number":
                    columns[name] = np.asarray(raw, dtype=np.float64)
                else:
                    columns[name] = [str(v) for v in raw]
            return cls(columns, int(data["size"]), data.get("encoder"), float(data["created"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"Malformed drift profile: {exc}.") from None

    def save(self, path: str | Path) -> None:
        """Writes the profile as JSON to `path` (replaced if present)."""
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """Reads a profile written by `save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON: {exc.msg}.") from None
        return cls.from_dict(data)


def build_profile(
    records: Iterable[DriftRecord],
    embed: EmbedPrompts | None,
    encoder: str | None = None,
    batch_size: int = 64,
) -> Profile:
    """A profile from past requests. `embed` embeds prompts in batches of
    `batch_size` (None leaves the embedding signal out); `encoder` names its model.
    ConfigError when there are no records."""
    records = list(records)
    if not records:
        raise ConfigError("A drift profile needs at least one record.")
    embeddings: list[np.ndarray | None] = [None] * len(records)
    if embed is not None:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            vectors = embed([r.prompt for r in chunk])
            embeddings[start : start + len(chunk)] = list(vectors)
    observations = [observe(r, e) for r, e in zip(records, embeddings, strict=True)]
    return Profile.from_observations(observations, encoder if embed is not None else None)
