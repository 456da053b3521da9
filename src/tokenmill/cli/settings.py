"""Settings from flags, environment and a config file, resolved once at the edge.

Precedence: command-line flag > TOKENMILL_<NAME> environment variable > config file >
built-in default. Defaults come from the config dataclasses themselves, so there is one
source of truth. Nothing below the CLI reads the environment.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenmill.config import DTYPES, CacheConfig, EngineConfig, ModelConfig, SchedulerConfig
from tokenmill.errors import InvalidRequestError
from tokenmill.server.config import ServerConfig

ENV_PREFIX = "TOKENMILL_"
_MODEL, _CACHE, _SCHED, _SERVER = ModelConfig(), CacheConfig(), SchedulerConfig(), ServerConfig()


class SettingsError(Exception):
    """A setting could not be read or is out of range; the message says which and why."""


def _optional_float(text: str) -> float | None:
    """A positive number, or 0/"none" for no limit."""
    if text.strip().lower() in ("", "0", "none", "off"):
        return None
    return float(text)


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


@dataclass(frozen=True)
class Option:
    """One setting: `--name-with-dashes`, `TOKENMILL_NAME`, key `name` in the file."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


ENGINE_OPTIONS = [
    Option(
        "model",
        str,
        None,
        "A packaged model's short name, a .gguf file or a Hugging Face "
        "model directory. Default: the embedded smollm2-135m-instruct.",
        "NAME|PATH",
    ),
    Option(
        "dtype",
        str,
        _MODEL.dtype,
        "Weights and activations precision; auto picks "
        "bfloat16 where the CPU supports it, else float32.",
        choices=DTYPES,
    ),
    Option(
        "quantization",
        str,
        _MODEL.quantization or "none",
        "Weight quantization: int8 stores weights as int8 and computes with int8 "
        "activations (per row) on the CPU's integer units; none keeps --dtype.",
        choices=("none", "int8"),
    ),
    Option(
        "max_model_len",
        int,
        None,
        "Context length to serve (prompt + output tokens). Default: the model's own.",
        "TOKENS",
    ),
    Option(
        "max_num_seqs",
        int,
        _SCHED.max_num_seqs,
        "Most sequences decoded together in one batch.",
        "N",
    ),
    Option(
        "max_num_batched_tokens",
        int,
        _SCHED.max_num_batched_tokens,
        "Most tokens computed "
        "in one engine step (long prompts are prefilled in chunks of this size).",
        "N",
    ),
    Option(
        "kv_cache_memory_gib",
        float,
        _CACHE.memory_gib,
        "Memory for the KV cache; it bounds how many tokens can be in flight at once.",
        "GIB",
    ),
    Option(
        "enable_prefix_caching",
        _bool,
        _CACHE.enable_prefix_caching,
        "Reuse the KV cache of shared prompt prefixes (true/false).",
    ),
    Option(
        "num_threads",
        int,
        None,
        "CPU threads for model compute. Default: all cores but one, left to the HTTP side.",
        "N",
    ),
]

SERVER_OPTIONS = [
    Option(
        "host",
        str,
        _SERVER.host,
        "Interface to listen on; 0.0.0.0 exposes the server to the network.",
        "ADDR",
    ),
    Option("port", int, _SERVER.port, "TCP port to listen on.", "PORT"),
    Option(
        "served_model_name",
        str,
        None,
        "Name clients pass as `model`. Default: the model's name.",
        "NAME",
    ),
    Option(
        "max_queue",
        int,
        _SCHED.max_waiting,
        "Requests allowed to wait for a batch slot; "
        "more are refused with HTTP 429 and Retry-After.",
        "N",
    ),
    Option(
        "request_timeout",
        _optional_float,
        _SERVER.request_timeout_s,
        "Seconds a request "
        "may take, queueing included, before it is aborted (HTTP 408); 0 means no limit.",
        "SECONDS",
    ),
    Option(
        "max_body_mib",
        float,
        _SERVER.max_body_bytes / 2**20,
        "Largest request body accepted; larger ones get HTTP 413.",
        "MIB",
    ),
    Option(
        "shutdown_grace",
        float,
        _SERVER.shutdown_grace_s,
        "On SIGTERM or Ctrl-C, seconds in-flight requests get to finish before they are aborted.",
        "SECONDS",
    ),
    Option(
        "log_level",
        str,
        _SERVER.log_level,
        "Logging detail.",
        choices=("critical", "error", "warning", "info", "debug"),
    ),
    Option("access_log", _bool, _SERVER.access_log, "Log one line per HTTP request (true/false)."),
]


def add_options(parser: argparse.ArgumentParser, options: list[Option], title: str) -> None:
    """Adds each option as a flag whose parsed default is None ("not given")."""
    group = parser.add_argument_group(title)
    for opt in options:
        if opt.default is None:
            where = f"[env {opt.env}]"
        else:
            default = str(opt.default).lower() if isinstance(opt.default, bool) else opt.default
            where = f"[default: {default}; env {opt.env}]"
        group.add_argument(
            opt.flag,
            dest=opt.name,
            default=None,
            metavar=opt.metavar or (None if opt.choices else "VALUE"),
            choices=opt.choices,
            help=f"{opt.help} {where}",
        )


def load_config_file(path: str | None) -> dict[str, Any]:
    """Settings from a TOML or JSON file: `name = value`, names as in the flags (dashes or
    underscores); [engine] / [server] tables are accepted and flattened."""
    if not path:
        return {}
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read config file {file}: {exc.strerror}") from exc
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, ImportError) as exc:
        raise SettingsError(f"cannot parse config file {file}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"config file {file} must hold a table of settings")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for name, item in items:
            flat[name.replace("-", "_")] = item
    return flat


def resolve(
    options: list[Option],
    args: argparse.Namespace,
    env: Mapping[str, str],
    file_values: Mapping[str, Any],
) -> dict[str, Any]:
    """Each option's value: flag, else environment, else file, else default."""
    values = {}
    for opt in options:
        given = getattr(args, opt.name, None)
        if given is not None:
            source, raw = f"{opt.flag}", given
        elif opt.env in env:
            source, raw = f"${opt.env}", env[opt.env]
        elif opt.name in file_values:
            source, raw = f"config key {opt.name!r}", file_values[opt.name]
        else:
            values[opt.name] = opt.default
            continue
        values[opt.name] = _convert(opt, raw, source)
    return values


def check_file_keys(file_values: Mapping[str, Any], options: list[Option]) -> None:
    """Refuses unknown keys instead of ignoring a typo."""
    known = {o.name for o in options}
    unknown = sorted(set(file_values) - known)
    if unknown:
        raise SettingsError(
            f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


def _convert(opt: Option, raw: Any, source: str) -> Any:
    if not isinstance(raw, str):
        raw = json.dumps(raw) if isinstance(raw, bool) else str(raw)
    try:
        value = opt.parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{source}: invalid value {raw!r} for {opt.name} ({exc})") from exc
    if opt.choices and value not in opt.choices:
        raise SettingsError(f"{source}: {opt.name} must be one of {', '.join(opt.choices)}")
    return value


def engine_config(values: Mapping[str, Any]) -> EngineConfig:
    """The engine's configuration; `max_queue` is used when serving."""
    try:
        return EngineConfig(
            model=ModelConfig(
                model=values["model"],
                dtype=values["dtype"],
                quantization=None if values["quantization"] == "none" else values["quantization"],
                max_model_len=values["max_model_len"],
                served_name=values.get("served_model_name"),
            ),
            cache=CacheConfig(
                memory_gib=values["kv_cache_memory_gib"],
                enable_prefix_caching=values["enable_prefix_caching"],
            ),
            scheduler=SchedulerConfig(
                max_num_seqs=values["max_num_seqs"],
                max_num_batched_tokens=values["max_num_batched_tokens"],
                max_waiting=values.get("max_queue", _SCHED.max_waiting),
            ),
            num_threads=values["num_threads"],
        )
    except InvalidRequestError as exc:
        raise SettingsError(str(exc)) from exc


def server_config(values: Mapping[str, Any]) -> ServerConfig:
    """The HTTP server's configuration."""
    try:
        return ServerConfig(
            host=values["host"],
            port=values["port"],
            served_model_name=values["served_model_name"],
            request_timeout_s=values["request_timeout"],
            max_body_bytes=int(values["max_body_mib"] * 2**20),
            shutdown_grace_s=values["shutdown_grace"],
            log_level=values["log_level"],
            access_log=values["access_log"],
        )
    except InvalidRequestError as exc:
        raise SettingsError(str(exc)) from exc
