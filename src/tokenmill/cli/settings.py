"""The command line's view of the declared settings: flags, environment, config file.

Precedence: command-line flag > TOKENMILL_<NAME> environment variable > config file >
the --profile's value > the default declared on the config field. Every flag here is
generated from the config classes (tokenmill.config), so there is nothing to keep in step
by hand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tokenmill.config import AppConfig, EngineConfig
from tokenmill.config.profile import PROFILES, Profile, get_profile
from tokenmill.config.setting import Setting, build, resolve, settings_of
from tokenmill.errors import ConfigError

PROFILE_ENV = "TOKENMILL_PROFILE"


def add_settings(parser: argparse.ArgumentParser, root: type) -> list[Setting]:
    """Adds a flag for each setting under `root`, grouped by config class; each flag's
    parsed default is None ("not given"). Returns the settings."""
    settings = settings_of(root)
    parser.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings.")
    parser.add_argument(
        "--profile",
        metavar="{" + ",".join(PROFILES) + "}",
        help="A preset of defaults that flags, TOKENMILL_* variables and the --config file "
        "still override [env TOKENMILL_PROFILE, or `profile` in the config file]. "
        + "; ".join(f"{p.name}: {p.summary}" for p in PROFILES.values())
        + ".",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in settings:
        if s.spec.hidden:
            continue
        group = groups.get(s.section)
        if group is None:
            group = groups[s.section] = parser.add_argument_group(s.section.lower())
        default = "" if s.default is None else f"default: {s.show(s.default)}; "
        kwargs: dict[str, Any] = {
            "dest": s.name,
            "default": None,
            "help": f"{s.spec.help} [{default}env {s.env}]".replace("%", "%%"),
        }
        if s.repeatable:
            kwargs.update(action="append", metavar=s.spec.metavar or "VALUE")
        elif s.base_type is bool:
            kwargs.update(nargs="?", const="true", metavar="BOOL")
        else:
            kwargs.update(
                metavar=s.spec.metavar
                or ("{" + ",".join(s.spec.choices) + "}" if s.spec.choices else "VALUE")
            )
        group.add_argument(s.flag, **kwargs)
    return settings


def load_config_file(path: str | None) -> dict[str, Any]:
    """Settings from a TOML or JSON file: `name = value` with names as in the flags
    (dashes or underscores); tables ([server], [scheduler], ...) are flattened."""
    if not path:
        return {}
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except ValueError as exc:
        raise ConfigError(f"cannot parse config file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {file} must hold a table of settings")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for name, item in items:
            flat[name.replace("-", "_")] = item
    return flat


def config_from_args(root: type, args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    """The `root` config (AppConfig or EngineConfig) from parsed flags, the environment
    and the --config file. Raises ConfigError naming the source of a bad value."""
    settings = settings_of(root)
    flags = {s.name: getattr(args, s.name, None) for s in settings}
    file_values = load_config_file(getattr(args, "config", None))
    profile = selected_profile(getattr(args, "profile", None), env, file_values)
    known = {s.name for s in settings}
    values = resolve(settings, flags, env, file_values, profile.for_settings(known))
    return build(root, values)


def selected_profile(flag: str | None, env: Mapping[str, str], file_values: dict) -> Profile:
    """The profile named by --profile, else $TOKENMILL_PROFILE, else the config file's
    `profile` key (removed from `file_values`: it is not a setting), else default."""
    in_file = file_values.pop("profile", None)
    if flag:
        return get_profile(flag)
    if env.get(PROFILE_ENV):
        return get_profile(env[PROFILE_ENV], f"${PROFILE_ENV}")
    if in_file is not None:
        return get_profile(str(in_file), "config key 'profile'")
    return get_profile(None)


def settings_markdown(root: type = AppConfig) -> str:
    """The README's settings table, one row per setting."""
    rows = ["| flag / env | default | what it does |", "|---|---|---|"]
    for s in settings_of(root):
        if s.spec.hidden:
            continue
        choices = f" One of: {', '.join(s.spec.choices)}." if s.spec.choices else ""
        rows.append(f"| `{s.flag}` `{s.env}` | {s.show(s.default)} | {s.spec.help}{choices} |")
    return "\n".join(rows)


__all__ = ["AppConfig", "EngineConfig", "add_settings", "config_from_args", "settings_markdown"]


if __name__ == "__main__":  # regenerates the README's table
    print(settings_markdown())
