"""Guardrail detectors: personal data (PII) and prompt injection, transport-free.

The gateway's policy modules call these; nothing here knows about HTTP or the engine.

- `PiiDetector.scan(text)` -> `Redaction` (redacted text, spans, entity types, changed)
- `StreamRedactor(detector)`: `feed(delta)` / `flush()` for streamed output
- `InjectionClassifier.score(texts)` / `check(text)` -> `InjectionVerdict`

Models load lazily and once per process (`shared_pii_detector`,
`shared_injection_classifier`).
"""

from tokenmill.gateway.guardrails.errors import GuardrailUnavailableError
from tokenmill.gateway.guardrails.pii import PiiConfig, PiiDetector, shared_pii_detector
from tokenmill.gateway.guardrails.spans import ENTITY_TYPES, PiiSpan, Redaction, redact

__all__ = [
    "ENTITY_TYPES",
    "GuardrailUnavailableError",
    "PiiConfig",
    "PiiDetector",
    "PiiSpan",
    "Redaction",
    "redact",
    "shared_pii_detector",
]
