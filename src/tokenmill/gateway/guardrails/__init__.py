"""Guardrail detectors: personal data (PII) and prompt injection, transport-free.

The gateway's policy modules call these; nothing here knows about HTTP or the engine.

- `PiiDetector.scan(text)` -> `Redaction` (redacted text, spans, entity types, changed)
- `StreamRedactor(detector)`: `feed(delta)` / `flush()` for streamed output
- `InjectionClassifier.score(texts)` / `check(text)` -> `InjectionVerdict` (score, flagged)

Models load lazily and once per process (`shared_pii_detector`,
`shared_injection_classifier`); call `load()` at start-up to keep the first request fast.
"""

from tokenmill.gateway.guardrails.errors import GuardrailUnavailableError
from tokenmill.gateway.guardrails.injection import (
    InjectionClassifier,
    InjectionConfig,
    InjectionVerdict,
    shared_injection_classifier,
)
from tokenmill.gateway.guardrails.pii import PiiConfig, PiiDetector, shared_pii_detector
from tokenmill.gateway.guardrails.spans import ENTITY_TYPES, PiiSpan, Redaction, redact
from tokenmill.gateway.guardrails.stream import StreamRedactor

__all__ = [
    "ENTITY_TYPES",
    "GuardrailUnavailableError",
    "InjectionClassifier",
    "InjectionConfig",
    "InjectionVerdict",
    "PiiConfig",
    "PiiDetector",
    "PiiSpan",
    "Redaction",
    "StreamRedactor",
    "redact",
    "shared_injection_classifier",
    "shared_pii_detector",
]
