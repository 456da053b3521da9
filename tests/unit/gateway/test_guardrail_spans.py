import pytest

from tokenmill.gateway.guardrails.patterns import find_structured, iban_valid, luhn_valid
from tokenmill.gateway.guardrails.spans import PiiSpan, redact, resolve_overlaps


def test_redact_replaces_each_span_with_its_type():
    text = "mail ann@example.org or call Ann"
    spans = [PiiSpan(5, 20, "EMAIL_ADDRESS"), PiiSpan(29, 32, "PERSON")]
    assert redact(text, spans) == "mail <EMAIL_ADDRESS> or call <PERSON>"


def test_overlapping_spans_become_their_union_labelled_by_the_most_confident():
    spans = [PiiSpan(0, 10, "PHONE_NUMBER", 0.4), PiiSpan(5, 19, "CREDIT_CARD", 1.0)]
    assert resolve_overlaps(spans) == [PiiSpan(0, 19, "CREDIT_CARD", 1.0)]
    assert redact("x" * 25, spans) == "<CREDIT_CARD>" + "x" * 6


def test_adjacent_spans_stay_apart():
    spans = [PiiSpan(0, 3, "PERSON"), PiiSpan(3, 6, "PERSON")]
    assert resolve_overlaps(spans) == spans


def test_a_span_outside_the_text_is_an_error_not_a_silent_cut():
    with pytest.raises(ValueError):
        redact("short", [PiiSpan(2, 9, "PERSON")])


def test_luhn_and_iban_checksums():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("DE89370400440532013000")
    assert not iban_valid("DE89370400440532013001")
    assert not iban_valid("DE8937040044053201300")  # German IBANs have 22 characters


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("card 4111 1111 1111 1111.", [("4111 1111 1111 1111", "CREDIT_CARD")]),
        ("amex 3782-822463-10005 ok", [("3782-822463-10005", "CREDIT_CARD")]),
        ("IBAN GB82 WEST 1234 5698 7654 32 today", [("GB82 WEST 1234 5698 7654 32", "IBAN_CODE")]),
        ("to x.y+tag@mail.example.co.uk.", [("x.y+tag@mail.example.co.uk", "EMAIL_ADDRESS")]),
        (
            "hosts 10.0.0.1 and 2001:db8::7334:",
            [("10.0.0.1", "IP_ADDRESS"), ("2001:db8::7334", "IP_ADDRESS")],
        ),
    ],
)
def test_structured_patterns_find_valid_values(text, found):
    spans = sorted(find_structured(text))
    assert [(text[s.start : s.end], s.entity_type) for s in spans] == found


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 (fails Luhn)",
        "order 1234 5678 9012 3452 (passes Luhn, no issuer starts with 1)",
        "IBAN DE89 3704 0044 0532 0130 01 has a wrong check digit",
        "version 1.2.300.4 and 999.1.1.1",
        "time 12:34:56, std::vector, a::b",
        "ISBN 978-3-16-148410-0, build 10.0.19045.3803",
    ],
)
def test_structured_patterns_reject_look_alikes(text):
    assert find_structured(text) == []
