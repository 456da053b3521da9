"""The PII detector with its real models (Presidio over spaCy, and Rampart ONNX)."""

import itertools
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.gateway.guardrail_factories import pii_texts
from tokenmill.gateway.guardrails.pii import BACKENDS, PiiConfig, PiiDetector
from tokenmill.gateway.guardrails.stream import StreamRedactor

pytestmark = pytest.mark.slow

POSITIVE = (
    "Hi, I'm Maria Gonzalez; mail maria.gonzalez@example.org or call +1 (415) 555-0132. "
    "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00, server 203.0.113.45 "
    "and 2001:db8:85a3::8a2e:370:7334."
)
NEGATIVE = (
    "The meeting is on 2024-03-05 at 14:30 in Berlin. Order #A-12345 shipped; version "
    "3.10.4 fixed it. The product code ABC-1234-5678-9012 is printed on the box."
)


@pytest.fixture(scope="module", params=BACKENDS)
def detector(request):
    detector = PiiDetector(PiiConfig(backend=request.param))
    detector.load()
    return detector


def test_finds_every_entity_type_in_a_clear_positive(detector):
    redaction = detector.scan(POSITIVE)
    assert redaction.text == (
        "Hi, I'm <PERSON>; mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>. "
        "Card <CREDIT_CARD>, IBAN <IBAN_CODE>, server <IP_ADDRESS> and <IP_ADDRESS>."
    )
    assert redaction.changed
    assert redaction.entity_types == (
        "CREDIT_CARD",
        "EMAIL_ADDRESS",
        "IBAN_CODE",
        "IP_ADDRESS",
        "PERSON",
        "PHONE_NUMBER",
    )


def test_leaves_a_clear_negative_alone(detector):
    redaction = detector.scan(NEGATIVE)
    assert redaction.text == NEGATIVE
    assert not redaction.changed and redaction.entity_types == ()


TEXTS = pii_texts()
OUTPUTS = [" ".join(TEXTS[i : i + 5]) for i in range(0, 80, 5)]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    index=st.integers(min_value=0, max_value=len(OUTPUTS) - 1),
    cuts=st.lists(st.integers(min_value=0), max_size=40),
)
def test_streamed_output_equals_whole_text_redaction(detector, index, cuts):
    text = OUTPUTS[index]
    whole = detector.scan(text).text
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    redactor = StreamRedactor(detector)
    released = ""
    for a, b in itertools.pairwise(points):
        released += redactor.feed(text[a:b])
        assert whole.startswith(released)
    assert released + redactor.flush() == whole
    assert whole != text  # these outputs hold PII, so the property is not vacuous


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_first_calls_load_the_model_once(backend, monkeypatch):
    detector = PiiDetector(PiiConfig(backend=backend))
    loads = []
    original = detector._backend.load
    monkeypatch.setattr(detector._backend, "load", lambda: (loads.append(1), original()))
    barrier = threading.Barrier(4)
    results = []

    def first_call():
        barrier.wait()
        results.append(detector.scan(POSITIVE).text)

    threads = [threading.Thread(target=first_call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1]
    assert len(results) == 4 and len(set(results)) == 1 and "<EMAIL_ADDRESS>" in results[0]


def test_a_batch_of_segments_finds_what_each_segment_finds_alone(detector):
    segments = [POSITIVE, "Tell Sam I'll be late.", NEGATIVE, "Call Jonas Becker on +49 30 901820."]
    alone = [detector.find_segment(segment) for segment in segments]
    assert detector._find_segments(segments) == alone
    assert alone[0] and alone[3] and not alone[2]
