"""PII redaction: what continuous learning stores, and so what the learner trains on, never holds e-mail
addresses, phone numbers, payment cards, IP addresses or national ids.

Each kind is found by a regular expression for candidates and then checked (Luhn for cards, mod 97 for IBANs,
``ipaddress`` for IPs, digit counts and shapes for phone numbers), so ordinary numbers such as years, prices or
"96" stay. A match is replaced by a typed placeholder: ``[EMAIL]``, ``[PHONE]``, ``[CARD]``, ``[IP]``, ``[ID]``.
Redaction is idempotent (placeholders match nothing) and runs on the store writer thread, never on the event loop.

Example::

    >>> redact("mail jo@example.com or call +44 20 7946 0958")
    ('mail [EMAIL] or call [PHONE]', {'email': 1, 'phone': 1})
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aphrodite.continuous_learning.interaction import Interaction

Counts = dict[str, int]
"""Redactions by kind: ``email``, ``phone``, ``card``, ``ip``, ``national_id``."""

_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# IBAN: country, check digits, then 11-30 alphanumerics, optionally in groups of four.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_SSN = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
# UK National Insurance number: two prefix letters (some never issued), six digits, suffix A-D.
_UK_NI = re.compile(r"\b(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# Cards: 4-4-4-4 (+1..3) with one consistent separator, Amex 4-6-5, or 13-19 digits in a row.
_CARD = re.compile(r"(?<![\d-])(?:(?P<main>\d{4}(?P<s>[ -]?)\d{4}(?P=s)\d{4}(?P=s)\d{4})(?P<tail>(?P=s)\d{1,3})?"
                   r"|\d{4}(?P<a>[ -]?)\d{6}(?P=a)\d{5}|\d{13,19})(?![\d])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# Phone candidates: an optional +country code, then up to six digit groups joined by one space, dot or dash,
# the first possibly in parentheses. Which candidates are phones is decided by ``_is_phone``.
_PHONE = re.compile(r"(?<![\w+.-])(?:\+\d{7,15}|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){0,5})"
                    r"(?![\w@])")
_US_PHONE = re.compile(r"\d{3}([-. ])\d{3}\1\d{4}")
_SEPARATORS = re.compile(r"[ .-]")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for k, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if k % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in moved)) % 97 == 1


def _is_phone(candidate: str) -> bool:
    digits = sum(ch.isdigit() for ch in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15
    if candidate.startswith("("):
        return 10 <= digits <= 11
    if _US_PHONE.fullmatch(candidate):
        return True
    # National formats with a trunk prefix (UK 020 7946 0958, FR 01 23 45 67 89, DE 030 1234567).
    groups = _SEPARATORS.split(candidate)
    return candidate.startswith("0") and len(groups) > 1 and 2 <= len(groups[0]) <= 5 and 10 <= digits <= 11


def _phone(match: re.Match, counts: Counts) -> str:
    text = match.group(0)
    # The longest leading run of groups that is a phone number; what follows ("... 0958 12 times") stays.
    cut = [m.start() for m in _SEPARATORS.finditer(text)] + [len(text)]
    for end in reversed(cut):
        head = text[:end].rstrip(" .-")
        if _is_phone(head):
            counts["phone"] = counts.get("phone", 0) + 1
            return "[PHONE]" + text[end:]
    return text


def _card(match: re.Match, counts: Counts) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if luhn_valid(digits):
        counts["card"] = counts.get("card", 0) + 1
        return "[CARD]"
    main = match.group("main")
    if match.group("tail") and luhn_valid(re.sub(r"\D", "", main)):  # a card followed by a short number
        counts["card"] = counts.get("card", 0) + 1
        return "[CARD]" + match.group("tail")
    return text


def _checked(kind: str, placeholder: str, valid: Callable[[str], bool]) -> Callable[[re.Match, Counts], str]:
    def replace(match: re.Match, counts: Counts) -> str:
        if not valid(match.group(0)):
            return match.group(0)
        counts[kind] = counts.get(kind, 0) + 1
        return placeholder
    return replace


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return "." in text or sum(1 for g in text.split(":") if g) >= 3  # "a[::2]" is slicing, not an address


_ALWAYS = lambda text: True  # noqa: E731
Rule = tuple[str, re.Pattern, Callable[[re.Match, Counts], str]]
"""A character every match holds (to skip texts without it cheaply), the pattern, the replacement."""
# Over the whole text: e-mails first (they hold digits and dots), then IPv6 (whose hex groups may hold no digit).
_TEXT_RULES: list[Rule] = [
    ("@", _EMAIL, _checked("email", "[EMAIL]", _ALWAYS)),
    (":", _IPV6, _checked("ip", "[IP]", _ip_valid)),
]
# Around digits only: every match holds a digit. Long ids before the phone numbers they resemble.
_DIGIT_RULES: list[Rule] = [
    ("", _IBAN, _checked("national_id", "[ID]", _iban_valid)),
    ("", _CARD, _card),
    ("-", _SSN, _checked("national_id", "[ID]", _ALWAYS)),
    ("", _UK_NI, _checked("national_id", "[ID]", _ALWAYS)),
    (".", _IPV4, _checked("ip", "[IP]", _ip_valid)),
    ("", _PHONE, _phone),
]
_MAY_HOLD_PII = re.compile(r"[\d@:]")
_REACH = 80
"""Characters a digit-holding match may extend beyond its digits, with margin (the longest, a phone number in
six groups, spans under 70 characters and holds a digit every 9)."""
_DIGIT_CLUSTERS = re.compile(r"\d(?:\D{0,%d}\d)*" % (2 * _REACH))
"""Digits with less than two reaches between neighbours: their windows would overlap."""
_BREAK = re.compile(r"[ \n]")


def redact(text: str, counts: Counts | None = None) -> tuple[str, Counts]:
    """``text`` with its PII replaced by placeholders, and how many of each kind were replaced."""
    counts = {} if counts is None else counts
    if not text or not _MAY_HOLD_PII.search(text):
        return text, counts
    text = _apply(_TEXT_RULES, text, counts)
    pieces, last = [], 0
    for start, end in _digit_windows(text):
        pieces += [text[last:start], _apply(_DIGIT_RULES, text[start:end], counts)]
        last = end
    pieces.append(text[last:])
    return "".join(pieces), counts


def _apply(rules: list[Rule], text: str, counts: Counts) -> str:
    for needs, pattern, replace in rules:
        if needs in text:
            text = pattern.sub(lambda m: replace(m, counts), text)
    return text


def _digit_windows(text: str) -> list[tuple[int, int]]:
    """Spans around the clusters of digits, ``_REACH`` wide on each side and widened to a space or newline (or
    the text's ends). A pattern sees the same context inside a window as in the whole text (a window is
    bordered by whitespace), so running the digit rules on the windows finds exactly what they find on the
    whole text, while prose between numbers is not scanned once per rule."""
    n, windows, end = len(text), [], -1
    for cluster in _DIGIT_CLUSTERS.finditer(text):
        lo = windows[-1][1] if windows else 0
        start = max(lo, cluster.start() - _REACH)
        if start > lo:
            start = max(text.rfind(" ", lo, start), text.rfind("\n", lo, start)) + 1 or lo
        if end < cluster.end() + _REACH:  # else the last break found is still the first one past this reach
            found = _BREAK.search(text, min(n, cluster.end() + _REACH))
            end = found.start() if found else n
        if windows and start <= windows[-1][1]:
            windows[-1] = (windows[-1][0], end)
        else:
            windows.append((start, end))
    return windows


def redact_interaction(interaction: Interaction, counts: Counts | None = None) -> Counts:
    """Redact an interaction's texts in place: prompt, chat messages' contents, choices, error, and the strings
    among its sampling parameters (stop strings).

    A choice whose text changed loses its token ids: they would spell out what was redacted.
    """
    counts = {} if counts is None else counts
    if interaction.prompt:
        interaction.prompt = redact(interaction.prompt, counts)[0]
    if interaction.messages:
        interaction.messages = [_redact_message(m, counts) for m in interaction.messages]
    for choice in interaction.choices:
        text, before = redact(choice.text, counts)[0], choice.text
        if text != before:
            choice.text, choice.token_ids = text, ()
    if interaction.error:
        interaction.error = redact(interaction.error, counts)[0]
    if any(isinstance(v, (str, list)) for v in interaction.sampling_params.values()):  # e.g. stop strings
        interaction.sampling_params = {k: _redact_value(v, counts) for k, v in interaction.sampling_params.items()}
    return counts


def _redact_value(value: Any, counts: Counts) -> Any:
    if isinstance(value, str):
        return redact(value, counts)[0]
    if isinstance(value, list):
        return [redact(v, counts)[0] if isinstance(v, str) else v for v in value]
    return value


def _redact_message(message: Any, counts: Counts) -> Any:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": redact(content, counts)[0]}
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        parts = [{**p, "text": redact(p["text"], counts)[0]} if isinstance(p, dict) and isinstance(p.get("text"), str)
                 else p for p in content]
        return {**message, "content": parts}
    return message
