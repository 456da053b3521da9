"""The models file (`--models FILE`): which models and versions one server serves.

TOML, one `[[models]]` table per version:

    [[models]]
    name = "smollm2"                  # what clients send as `model`
    version = "1"                     # a string; NAME@VERSION pins it
    source = "smollm2-135m-instruct"  # packaged short name, .gguf path or HF directory
    task = "generate"                 # generate | embed | classify | ner
    dtype = "float32"                 # optional (generate): auto | float32 | bfloat16
    quantization = "int8"             # optional (generate): int8 | auto | none
    traffic = 90                      # percent of NAME's requests (sticky per key/user)
    shadow = false                    # true: gets a copy of live traffic, answers compared

A name's non-shadow traffic must add up to 100 (a version at 0 is loaded but idle).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from tokenmill.config.engine import DTYPES, QUANTIZATIONS
from tokenmill.errors import ConfigError
from tokenmill.files import write_text_atomically

TASKS = ("generate", "embed", "classify", "ner")
_FIELDS = {"name", "version", "source", "task", "dtype", "quantization", "traffic", "shadow"}


@dataclass(frozen=True)
class ModelSpec:
    """One served version, as the models file or the admin API declares it."""

    name: str
    version: str = "1"
    source: str | None = None
    """Packaged short name, .gguf path or model directory; None: the task's default."""
    task: str = "generate"
    dtype: str = "auto"
    quantization: str | None = None
    traffic: float = 100.0
    """Percent of the name's requests this version answers."""
    shadow: bool = False

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        if not self.name or "@" in self.name or "/" in self.name:
            raise ConfigError(f"{where}: a name must be non-empty, without '@' or '/'.", "models")
        if not self.version or "@" in self.version or "/" in self.version:
            raise ConfigError(f"{where}: version must be non-empty, without '@' or '/'.", "models")
        if self.version in ("stable", "canary"):
            raise ConfigError(f"{where}: {self.version!r} is an alias, not a version.", "models")
        if self.task not in TASKS:
            raise ConfigError(f"{where}: task must be one of {', '.join(TASKS)}.", "models")
        if self.dtype not in DTYPES:
            raise ConfigError(f"{where}: dtype must be one of {', '.join(DTYPES)}.", "models")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ConfigError(f"{where}: quantization must be int8, auto or omitted.", "models")
        if not 0.0 <= self.traffic <= 100.0:
            raise ConfigError(f"{where}: traffic must be a percent in [0, 100].", "models")
        if self.shadow and self.traffic:
            raise ConfigError(
                f"{where}@{self.version}: a shadow version gets a copy of the traffic, not a "
                "share: set traffic = 0.",
                "models",
            )

    @property
    def key(self) -> str:
        """NAME@VERSION."""
        return f"{self.name}@{self.version}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_table(cls, table: dict[str, Any], where: str) -> ModelSpec:
        """A spec from a TOML table or JSON object; ConfigError names what is wrong."""
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table.", "models")
        unknown = sorted(set(table) - _FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}.", "models")
        if "name" not in table:
            raise ConfigError(f"{where}: name is required.", "models")
        values = dict(table)
        values["version"] = str(values.get("version", "1"))
        if values.get("quantization") in ("none", ""):
            values["quantization"] = None
        for text in ("name", "source", "task", "dtype"):
            if values.get(text) is not None and not isinstance(values[text], str):
                raise ConfigError(f"{where}: {text} must be a string.", "models")
        if not isinstance(values.get("traffic", 0), int | float) or isinstance(
            values.get("traffic"), bool
        ):
            raise ConfigError(f"{where}: traffic must be a number.", "models")
        if not isinstance(values.get("shadow", False), bool):
            raise ConfigError(f"{where}: shadow must be true or false.", "models")
        values.setdefault("traffic", 0.0 if values.get("shadow") else 100.0)
        values["traffic"] = float(values["traffic"])
        return cls(**values)


def check_traffic(specs: list[ModelSpec], where: str) -> None:
    """ConfigError unless each name's versions are unique and their live traffic adds
    up to 100 (or the name has only shadow versions left, which serve nothing)."""
    seen: set[str] = set()
    totals: dict[str, float] = {}
    for spec in specs:
        if spec.key in seen:
            raise ConfigError(f"{where}: {spec.key} is declared twice.", "models")
        seen.add(spec.key)
        if not spec.shadow:
            totals[spec.name] = totals.get(spec.name, 0.0) + spec.traffic
    for name, total in totals.items():
        if abs(total - 100.0) > 1e-6:
            raise ConfigError(
                f"{where}: the traffic of {name!r}'s versions adds up to {total:g}, not 100.",
                "models",
            )
    tasks: dict[str, str] = {}
    for spec in specs:
        if tasks.setdefault(spec.name, spec.task) != spec.task:
            raise ConfigError(f"{where}: {spec.name!r}'s versions serve different tasks.", "models")


def read_models_file(path: str | Path) -> list[ModelSpec]:
    """The specs of a models file, checked; ConfigError says what to fix."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read models file {path}: {exc.strerror}", "models") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse models file {path}: {exc}", "models") from None
    tables = data.get("models")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(f"models file {path} has no [[models]] tables.", "models")
    specs = [
        ModelSpec.from_table(t, f"models file {path}, [[models]] #{i + 1}")
        for i, t in enumerate(tables)
    ]
    check_traffic(specs, f"models file {path}")
    return specs


def read_state(path: str | Path) -> list[ModelSpec] | None:
    """The specs the admin API last saved, or None when there is no state file yet."""
    path = Path(path).expanduser()
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        specs = [
            ModelSpec.from_table(t, f"registry state {path}, entry #{i + 1}")
            for i, t in enumerate(data["models"])
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"cannot read registry state {path}: {exc}. Fix or delete it (the models file "
            "is then used as written).",
            "registry_state",
        ) from None
    check_traffic(specs, f"registry state {path}")
    return specs


def write_state(path: str | Path, specs: list[ModelSpec]) -> None:
    """Saves `specs` atomically (a crash leaves the old state or the new, never half)."""
    text = json.dumps({"models": [s.to_json() for s in specs]}, indent=2)
    write_text_atomically(Path(path).expanduser(), text)


def next_version(specs: list[ModelSpec], name: str) -> str:
    """One more than the highest numeric version of `name` ("1" for a new name)."""
    numbers = [int(s.version) for s in specs if s.name == name and s.version.isdigit()]
    return str(max(numbers, default=0) + 1)


def add_version(path: str | Path, spec: ModelSpec) -> None:
    """Appends `spec` as a new [[models]] table to the models file at `path`, keeping
    the file's own text (comments, order) above it. The edited file is checked as a
    server would read it before it replaces the old one atomically (a crash leaves the
    old file or the new, never half of one). ConfigError, with the file untouched, when
    NAME@VERSION exists or the result would not be a valid models file."""
    path = Path(path).expanduser()
    specs = read_models_file(path)
    if any(s.key == spec.key for s in specs):
        raise ConfigError(f"models file {path}: {spec.key} exists already.", "models")
    text = path.read_text().rstrip("\n") + "\n\n" + spec_toml(spec)
    write_text_atomically(path, text, check=read_models_file)


def spec_toml(spec: ModelSpec) -> str:
    """`spec` as one [[models]] table (fields at their defaults left out)."""
    lines = ["[[models]]"]
    defaults = ModelSpec(name=spec.name)
    for key, value in spec.to_json().items():
        if key not in ("name", "version", "traffic") and value == getattr(defaults, key):
            continue
        if value is None:
            continue
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
