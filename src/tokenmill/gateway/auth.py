"""API keys: who may call, with which rights; and the policy that keeps keys to their models.

Keys are kept only as SHA-256 digests and compared in constant time against every
configured key (no early exit), so neither the comparison nor the lookup tells an
attacker how close a guess was. Keys are never logged; their names are.

The keys file (`--keys FILE`) is TOML, one table per named key:

    [keys.alice]
    key = "sk-alice-..."        # or sha256 = "<hex digest of the key>"
    rpm = 60                    # optional: requests per minute
    tpm = 20000                 # optional: prompt + max_tokens per minute
    models = ["smollm2-135m-instruct"]   # optional; default all
    admin = false               # optional
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import tomllib

from tokenmill.errors import ConfigError, TokenmillError
from tokenmill.gateway.call import Caller
from tokenmill.gateway.policy import CallContext, Policy

_FIELDS = {"key", "sha256", "rpm", "tpm", "models", "admin"}


class AuthenticationError(TokenmillError):
    """No key, or a key nobody configured (HTTP 401)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(TokenmillError):
    """A valid key asked for something it may not use (HTTP 403)."""

    status_code = 403
    error_type = "invalid_request_error"
    default_code = "model_not_allowed"


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    caller: Caller


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyStore:
    """The configured keys. Empty means authentication is off (everyone is anonymous)."""

    def __init__(self, entries: list[_Entry]):
        self._entries = entries

    @classmethod
    def from_settings(cls, api_keys: tuple[str, ...], keys_file: str | None) -> KeyStore:
        """`--api-key` keys (admins named "admin") plus the keys file's. ConfigError for a
        file that cannot be read or holds an invalid table."""
        entries = [
            _Entry(digest(k), Caller("admin", admin=True, authenticated=True)) for k in api_keys
        ]
        if keys_file:
            entries += _read_keys_file(Path(keys_file).expanduser())
        return cls(entries)

    @property
    def enabled(self) -> bool:
        return bool(self._entries)

    def authenticate(self, presented: str | None) -> Caller:
        """The caller a presented key belongs to; AuthenticationError otherwise."""
        if not presented:
            raise AuthenticationError(
                "No API key: send it as `Authorization: Bearer KEY` (or `x-api-key: KEY`)."
            )
        wanted = digest(presented)
        found: Caller | None = None
        for entry in self._entries:  # every entry, no early exit: constant time
            if hmac.compare_digest(entry.digest, wanted):
                found = entry.caller
        if found is None:
            raise AuthenticationError("Incorrect API key provided.")
        return found


def _read_keys_file(path: Path) -> list[_Entry]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read keys file {path}: {exc.strerror}", "keys") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse keys file {path}: {exc}", "keys") from None
    tables = data.get("keys")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"keys file {path} has no [keys.NAME] tables", "keys")
    entries = []
    for name, table in tables.items():
        where = f"keys file {path}, [keys.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table", "keys")
        unknown = sorted(set(table) - _FIELDS)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}", "keys")
        if ("key" in table) == ("sha256" in table):
            raise ConfigError(f"{where} needs exactly one of key or sha256", "keys")
        try:
            raw = digest(table["key"]) if "key" in table else bytes.fromhex(table["sha256"])
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"{where}: sha256 must be a hex digest", "keys") from None
        if len(raw) != 32:
            raise ConfigError(f"{where}: sha256 must be 64 hex digits", "keys")
        for limit in ("rpm", "tpm"):
            value = table.get(limit)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{where}: {limit} must be a positive integer", "keys")
        models = table.get("models")
        if models is not None and (
            not isinstance(models, list) or not all(isinstance(m, str) for m in models)
        ):
            raise ConfigError(f"{where}: models must be a list of names", "keys")
        caller = Caller(
            name=name,
            admin=bool(table.get("admin", False)),
            models=tuple(models) if models is not None else None,
            rpm=table.get("rpm"),
            tpm=table.get("tpm"),
            authenticated=True,
        )
        entries.append(_Entry(raw, caller))
    return entries


class ModelAccessPolicy(Policy):
    """Refuses (403) a key that asks for a model outside its `models` list."""

    name = "model_access"

    async def pre_call(self, ctx: CallContext) -> None:
        caller = ctx.call.caller
        base = ctx.model.split("@", 1)[0]
        if not (caller.may_use(ctx.model) or caller.may_use(base)):
            raise PermissionDeniedError(
                f"The key {caller.name!r} may not use the model {ctx.model!r}; it may use "
                f"{', '.join(caller.models or ())}.",
                param="model",
            )
