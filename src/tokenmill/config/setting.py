"""Settings declared once, as config dataclass fields made with `setting()`.

Command-line flags (`--max-num-seqs`), environment variables (`TOKENMILL_MAX_NUM_SEQS`),
config-file keys (`max_num_seqs`), the offline `LLM(...)` keywords and the README's
table are all generated from these declarations: a setting added to a config class
appears everywhere at once. Nothing here reads the environment; callers pass it in.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenmill.errors import ConfigError

ENV_PREFIX = "TOKENMILL_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class SettingSpec:
    """How one config field is offered to users."""

    help: str
    """One or two sentences: what it does and, where it matters, the unit."""
    name: str | None = None
    """The flat name (flag, env, file key) when the field's own name would be ambiguous
    across config classes (CacheConfig.dtype is `kv_cache_dtype`)."""
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    none_words: tuple[str, ...] = ()
    """Words that mean None for an optional setting, e.g. ("0", "none") for no limit."""
    secret: bool = False
    """Values are never echoed back (API keys)."""
    hidden: bool = False
    """Kept out of --help and the README (test-only knobs); still settable in code."""


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A dataclass field declaring a user-facing setting with its help text."""
    return field(default=default, metadata={"setting": SettingSpec(help=help, **spec)})


@dataclass(frozen=True)
class Setting:
    """One declared setting, found by walking a root config class."""

    name: str
    path: tuple[str, ...]
    """Attribute path from the root config, e.g. ("engine", "scheduler", "max_num_seqs")."""
    type: Any
    default: Any
    spec: SettingSpec
    section: str
    """The config class's name without "Config" (the --help group), e.g. "Scheduler"."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def base_type(self) -> Any:
        """int, float, str, bool or tuple, with Optional stripped."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        origin = typing.get_origin(self.type)
        if origin in (typing.Union, types.UnionType) and len(args) == 1:
            return args[0]
        return self.type

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def repeatable(self) -> bool:
        return typing.get_origin(self.base_type) is tuple

    def coerce(self, raw: Any, source: str) -> Any:
        """`raw` (a string from a flag or the environment, or a TOML/JSON value) as this
        setting's type. Raises ConfigError naming `source`."""
        try:
            return self._coerce(raw)
        except (TypeError, ValueError) as exc:
            shown = "***" if self.spec.secret else repr(raw)
            raise ConfigError(
                f"{source}: invalid value {shown} for {self.name}: {exc}", setting=self.name
            ) from None

    def _coerce(self, raw: Any) -> Any:
        if self.repeatable:
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple):
                raise TypeError("expected a list")
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(raw, str) and self.optional and raw.strip().lower() in self.spec.none_words:
            return None
        if raw is None and self.optional:
            return None
        kind = self.base_type
        if kind is bool:
            word = (json.dumps(raw) if isinstance(raw, bool) else str(raw)).strip().lower()
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise ValueError("expected true or false")
        if isinstance(raw, bool):
            raise TypeError(f"expected {kind.__name__}, got a boolean")
        value = kind(raw) if kind in (int, float) else str(raw)
        if kind is int and isinstance(raw, float) and raw != int(raw):
            raise ValueError("expected a whole number")
        if self.spec.choices and value not in self.spec.choices:
            raise ValueError(f"must be one of {', '.join(self.spec.choices)}")
        return value

    def show(self, value: Any) -> str:
        """A value as --help and the README print it."""
        if value is None:
            return "unset"
        if self.spec.secret:
            return "***"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple):
            return ",".join(value) or "none"
        return str(value)


def settings_of(root: type) -> list[Setting]:
    """Every setting reachable from `root`, in declaration order. Nested config classes
    (fields whose type is a dataclass) are walked; flat names must be unique."""
    found: list[Setting] = []
    _walk(root, (), found)
    names = [s.name for s in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"settings declared twice: {', '.join(dupes)}")
    return found


def _walk(cls: type, prefix: tuple[str, ...], out: list[Setting]) -> None:
    hints = typing.get_type_hints(cls)
    section = cls.__name__.removesuffix("Config") or cls.__name__
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            _walk(kind, (*prefix, f.name), out)
            continue
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        out.append(Setting(spec.name or f.name, (*prefix, f.name), kind, f.default, spec, section))


def build(root: type, values: Mapping[str, Any]) -> Any:
    """An instance of `root` with the given flat-named values (others default).
    Unknown names raise ConfigError; validation errors of the classes propagate."""
    known = {s.name: s for s in settings_of(root)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    by_path = {known[n].path: v for n, v in values.items()}
    return _build(root, (), by_path)


def _build(cls: type, prefix: tuple[str, ...], by_path: dict[tuple[str, ...], Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], path, by_path)
        elif path in by_path:
            kwargs[f.name] = by_path[path]
    return cls(**kwargs)


def resolve(
    settings: list[Setting],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
    profile_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Each setting given anywhere, by precedence: flag > TOKENMILL_ env > file > profile.
    Settings given nowhere are left out (their declared default applies). `flags` maps
    names to raw values, None meaning not given; `profile_values` holds typed values."""
    known = {s.name for s in settings}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    values = {}
    for s in settings:
        if flags.get(s.name) is not None:
            values[s.name] = s.coerce(flags[s.name], s.flag)
        elif s.env in env:
            values[s.name] = s.coerce(env[s.env], f"${s.env}")
        elif s.name in file_values:
            values[s.name] = s.coerce(file_values[s.name], f"config key {s.name!r}")
        elif profile_values and s.name in profile_values:
            values[s.name] = profile_values[s.name]
    return values
