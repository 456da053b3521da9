"""Checksum-validated patterns for structured PII: emails, cards, IBANs, IP addresses.

A regular expression proposes candidates and a validator keeps only real ones: card
numbers must pass the Luhn check and start with an issuer's prefix, IBANs must have
their country's length and pass the ISO 7064 mod-97 check, IP addresses must parse
with `ipaddress`. Model-free and fast; names and phone numbers need a model (see the
backends).
"""

from __future__ import annotations

import ipaddress
import re

from tokenmill.gateway.guardrails.spans import (
    CREDIT_CARD,
    EMAIL_ADDRESS,
    IBAN_CODE,
    IP_ADDRESS,
    PiiSpan,
)

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![\w-])"
)
# 13 to 19 digits, optionally grouped by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d]|\.\d)")
# A run of hex digits, colons and dots with at least two colons; `ipaddress` decides.
_IPV6 = re.compile(r"(?<![\w:.])[0-9A-Fa-f.:]*:[0-9A-Fa-f.:]*:[0-9A-Fa-f.:]*(?!\w)")

# Issuer prefixes (IIN ranges): Visa 4, Mastercard 51-55 and 2221-2720, Maestro 50 and
# 56-69, Discover and UnionPay 6x, American Express 34/37, Diners Club 30/36/38/39,
# JCB 35. A digit run starting otherwise is an order number, not a card.
_CARD_PREFIX = re.compile(r"[456]|3[04-9]|2(?:22[1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)")

# ISO 13616 lengths for the countries most likely in prompts; another country's
# IBAN still counts when it passes the checksum and fits the 15 to 34 range.
_IBAN_LENGTHS = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22,
    "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27, "HR": 21,
    "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TR": 26, "UA": 29, "SA": 24, "AE": 23, "IL": 23,
    "BR": 29, "QA": 29, "KW": 30, "MU": 30,
}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn checksum."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """Whether an IBAN without spaces has its country's length and a valid mod-97."""
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _emails(text: str) -> list[PiiSpan]:
    return [PiiSpan(m.start(), m.end(), EMAIL_ADDRESS) for m in _EMAIL.finditer(text)]


def _cards(text: str) -> list[PiiSpan]:
    spans = []
    for match in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if _CARD_PREFIX.match(digits) and luhn_valid(digits):
            spans.append(PiiSpan(match.start(), match.end(), CREDIT_CARD))
    return spans


def _ibans(text: str) -> list[PiiSpan]:
    spans = []
    for match in _IBAN.finditer(text):
        # The pattern is greedy and may run into a following code; try each shorter
        # candidate ending on an alphanumeric until one validates.
        candidate = match.group()
        for end in range(len(candidate), 14, -1):
            if candidate[end - 1] == " ":
                continue
            if iban_valid(candidate[:end].replace(" ", "")):
                spans.append(PiiSpan(match.start(), match.start() + end, IBAN_CODE))
                break
    return spans


def _ip_addresses(text: str) -> list[PiiSpan]:
    spans = []
    for match in _IPV4.finditer(text):
        try:
            ipaddress.IPv4Address(match.group())
        except ValueError:
            continue
        spans.append(PiiSpan(match.start(), match.end(), IP_ADDRESS))
    for match in _IPV6.finditer(text):
        candidate = match.group()
        # Trailing punctuation ("at fe80::1: it failed.") is not part of the address.
        while candidate[-1:] in (".", ":") and not candidate.endswith("::"):
            candidate = candidate[:-1]
        # "a::b" parses, but an address in prose has a digit; scoped names do not.
        if not any(char.isdigit() for char in candidate):
            continue
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        spans.append(PiiSpan(match.start(), match.start() + len(candidate), IP_ADDRESS))
    return spans


def find_structured(text: str) -> list[PiiSpan]:
    """All email, card, IBAN and IP address spans in `text` (may overlap), unsorted."""
    return _emails(text) + _cards(text) + _ibans(text) + _ip_addresses(text)
