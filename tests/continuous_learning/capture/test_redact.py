"""PII redaction: each kind is found in its usual formats, and ordinary text and numbers stay as they are."""

import pytest

from aphrodite.continuous_learning.capture.redact import luhn_valid, redact, redact_interaction
from aphrodite.continuous_learning.interaction import interaction_from_finished
from tests.continuous_learning.fakes import finished

FOUND = [
    ("write to jo.smith+tag@example.co.uk today", "write to [EMAIL] today", "email"),
    ("mail: A_B@mail-server.example.org.", "mail: [EMAIL].", "email"),
    ("call +44 20 7946 0958 now", "call [PHONE] now", "phone"),
    ("+1 (555) 123-4567", "[PHONE]", "phone"),
    ("+14155552671", "[PHONE]", "phone"),
    ("tel: +33 1 23 45 67 89.", "tel: [PHONE].", "phone"),
    ("(555) 123-4567", "[PHONE]", "phone"),
    ("555-123-4567 or 555.123.4567", "[PHONE] or [PHONE]", "phone"),
    ("ring 020 7946 0958 12 times", "ring [PHONE] 12 times", "phone"),
    ("mobile 07700 900123", "mobile [PHONE]", "phone"),
    ("card 4111 1111 1111 1111", "card [CARD]", "card"),
    ("card 4111-1111-1111-1111 exp 12", "card [CARD] exp 12", "card"),
    ("4111111111111111", "[CARD]", "card"),
    ("4111 1111 1111 1111 12", "[CARD] 12", "card"),
    ("amex 3782 822463 10005", "amex [CARD]", "card"),
    ("host 192.168.1.20:8080", "host [IP]:8080", "ip"),
    ("v6 2001:db8::8a2e:370:7334 here", "v6 [IP] here", "ip"),
    ("ssn 123-45-6789", "ssn [ID]", "national_id"),
    ("NI number AB 12 34 56 C", "NI number [ID]", "national_id"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN [ID]", "national_id"),
    ("DE89370400440532013000", "[ID]", "national_id"),
]

KEPT = [
    "the year 1999",
    "scored 96 points in 2019",
    "pi is 3.14159 and e is 2.71828",
    "4111 1111 1111 1112",  # 16 digits that fail Luhn: not a card
    "order 1234567890",  # a bare number is not a phone
    "12 345 people, 3 000 000 views",
    "on 2024-01-15 at 12:30:45",
    "version 1.2.3, slice a[::2], localhost ::1",
    "invalid address 999.1.1.1",
    "ssn-like 000-12-3456",
    "GB82 WEST 1234 5698 7654 33",  # IBAN with a wrong check
    "no digits at all, just words",
]


@pytest.mark.parametrize("text,expected,kind", FOUND)
def test_pii_is_replaced_by_a_typed_placeholder(text, expected, kind):
    redacted, counts = redact(text)
    assert redacted == expected
    assert set(counts) == {kind}


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_text_and_numbers_stay(text):
    assert redact(text) == (text, {})


def test_redaction_is_idempotent_and_counts_every_match():
    text = "a@b.io, c@d.io, 4111111111111111 and +44 20 7946 0958"
    once, counts = redact(text)
    assert counts == {"email": 2, "card": 1, "phone": 1}
    assert redact(once) == (once, {})


def test_luhn():
    assert luhn_valid("4111111111111111") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112")


def test_an_interaction_is_redacted_everywhere_and_loses_the_token_ids_of_redacted_text():
    i = interaction_from_finished(finished(
        chat=True, text="Mail me at jo@example.com", error="upstream 10.0.0.7 refused",
        sampling_params={"temperature": 0.5, "stop": ["\n", "bye jo@example.com"]},
        messages=[{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": [{"type": "text", "text": "I am on 555-123-4567"}]}]))
    clean = interaction_from_finished(finished(text="Paris."))
    counts = redact_interaction(i)
    assert counts == {"email": 2, "phone": 1, "ip": 1}
    assert i.sampling_params == {"temperature": 0.5, "stop": ["\n", "bye [EMAIL]"]}
    assert i.completion == "Mail me at [EMAIL]" and not i.choices[0].token_ids
    assert i.messages[0] == {"role": "system", "content": "Be brief."}
    assert i.messages[1]["content"] == [{"type": "text", "text": "I am on [PHONE]"}]
    assert i.error == "upstream [IP] refused"
    assert redact_interaction(clean) == {} and list(clean.choices[0].token_ids)  # untouched text keeps its ids


def test_working_on_windows_around_digits_finds_what_the_whole_text_gives():
    import random

    from aphrodite.continuous_learning.capture import redact as r

    rng = random.Random(0)
    tokens = [t for t, _, _ in FOUND] + KEPT + ["word", "a" * 200, "\n", "  ", "-", ".", "(", ")", "+", "7", "42"]
    for _ in range(300):
        text = "".join(rng.choice(tokens) + rng.choice(["", " ", "\n", "-"]) for _ in range(rng.randint(1, 40)))
        whole: dict = {}
        expected = r._apply(r._DIGIT_RULES, r._apply(r._TEXT_RULES, text, whole), whole)
        windowed, counts = redact(text)
        assert (windowed, counts) == (expected, whole), text
