"""The audit log: one JSON line per request, and never the key or, by default, the text.

Each line: time, request id, key name, model, status (and HTTP status), prompt, output
and cached tokens, latency, who answered, the cache result and each guardrail's
decision. Prompt and output text appear only under `--log-prompts`. Lines are written
whole with one `write` on a file opened for appending, so concurrent writers (threads
or processes) never interleave half lines.
"""

from __future__ import annotations

import datetime
import json
import os
import threading

from tokenmill.errors import TokenmillError
from tokenmill.gateway.policy import CallContext, Policy


def call_status(ctx: CallContext) -> tuple[str, int]:
    """("ok", 200), or the error's code and HTTP status ("client_closed", 499 when the
    client went away)."""
    error = ctx.error
    if error is None:
        return "ok", 200
    if isinstance(error, TokenmillError):
        return error.code, error.status_code
    if isinstance(error, BaseException) and type(error).__name__ == "CancelledError":
        return "client_closed", 499
    return "internal_error", 500


def audit_record(ctx: CallContext, log_prompts: bool) -> dict:
    """The audit line for a finished call."""
    status, http_status = call_status(ctx)
    usage = ctx.result.usage if ctx.result is not None else None
    record = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        "request_id": ctx.call.request_id,
        "key": ctx.call.caller.name,
        "model": ctx.route.model if ctx.route is not None else ctx.call.body.model,
        "kind": ctx.call.kind,
        "status": status,
        "http_status": http_status,
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "cached_tokens": usage.cached_tokens if usage else 0,
        "latency_ms": round(ctx.latency_s * 1000, 1),
        "served_by": ctx.served_by,
        "cache": ctx.decisions.get("cache"),
        "guardrails": {
            k: v for k, v in ctx.decisions.items() if k.startswith(("pii", "injection"))
        },
    }
    if log_prompts:
        record["prompt"] = _prompt_text(ctx)
        if ctx.result is not None and ctx.result.output is None:
            record["output"] = [c.text for cs in ctx.result.choices for c in cs]
    return record


def _prompt_text(ctx: CallContext) -> str | list:
    body = ctx.body
    if ctx.call.kind == "chat":
        return [
            {"role": m.role, "content": m.content if isinstance(m.content, str) else str(m.content)}
            for m in body.messages
        ]
    text = body.prompt if ctx.call.kind == "completion" else body.input
    return text if isinstance(text, str) else str(text)


class AuditLog(Policy):
    """Appends each finished call's audit line to a file."""

    name = "audit"

    def __init__(self, path: str, log_prompts: bool = False):
        self.path = path
        self.log_prompts = log_prompts
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def post_call(self, ctx: CallContext) -> None:
        line = json.dumps(audit_record(ctx, self.log_prompts), ensure_ascii=False) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())

    def close(self) -> None:
        os.close(self._fd)
