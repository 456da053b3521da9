"""Errors raised while setting up a guardrail."""

from __future__ import annotations


class GuardrailUnavailableError(RuntimeError):
    """A guardrail's model or library is not installed; the message says what to install.

    Raised at load time, never per request: the server should refuse to start with a
    guardrail it cannot run rather than let requests through unchecked.
    """
