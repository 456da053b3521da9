"""The golden reference, transformers, imported so that its absence fails loudly."""

from __future__ import annotations

import pytest


def import_transformers():
    """transformers, or a test failure saying how to get it. Never a skip: a skipped
    golden suite reads as a passing one, and `make test` installs transformers (the
    `test` extra)."""
    try:
        import transformers
    except ImportError as exc:
        pytest.fail(f"transformers is not installed ({exc}): `make test` installs it")
    return transformers
