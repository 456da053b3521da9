"""xgrammar is imported at the first structured request, not with the engine, and a
missing `structured` extra refuses such requests with a clear 400."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenmill.engine import grammar
from tokenmill.errors import InvalidRequestError
from tokenmill.sampling_params import StructuredSpec


def test_engine_import_leaves_xgrammar_unloaded():
    code = (
        "import sys, tokenmill.engine.core, tokenmill.server.app; "
        "print('xgrammar' in sys.modules, 'scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


def test_without_xgrammar_a_structured_request_is_refused(monkeypatch):
    monkeypatch.setattr(grammar, "_xgrammar", lambda: None)
    cache = grammar.GrammarCache(tokenizer=None, vocab_size=8, stop_token_ids=[0])
    spec = StructuredSpec("json_object", param="response_format")
    with pytest.raises(InvalidRequestError, match=r"tokenmill\[structured\]") as err:
        cache.constraint(spec)
    assert err.value.param == "response_format"
