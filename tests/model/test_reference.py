"""The golden suite cannot be skipped away."""

import sys

import pytest

from tests.model.reference import import_transformers


def test_missing_transformers_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes the import raise
    with pytest.raises(pytest.fail.Exception, match="make test"):
        import_transformers()
