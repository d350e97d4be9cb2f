"""Keyed digests, signed tokens and e-mail addresses masked in logs."""

from __future__ import annotations

import logging

from registration.common.emails import mask_addresses, mask_email
from registration.common.logsetup import RedactingFormatter
from registration.common.signing import keyed_digest, sign, verify

KEY = b"signing-test-key"


def test_a_token_holds_its_claims_for_its_purpose_key_and_lifetime() -> None:
    token = sign(KEY, "register", {"e": "a@example.org"}, expires_at=1000.0)
    assert verify(KEY, "register", token, now=999.0) == {"e": "a@example.org", "exp": 1000.0}
    assert verify(KEY, "register", token, now=1000.0) is None  # expired
    assert verify(KEY, "csrf", token, now=999.0) is None  # made for another use
    assert verify(b"another-key-here", "register", token, now=999.0) is None
    _payload, _, mac = token.partition(".")
    forged = sign(b"x" * 16, "register", {"e": "m@example.org"}, expires_at=1000.0).partition(".")[0]
    assert verify(KEY, "register", f"{forged}.{mac}", now=999.0) is None  # another payload, the same MAC
    for junk in ("", ".", "abc", "é.é", "a" * 2000, None, 12):
        assert verify(KEY, "register", junk, now=0.0) is None


def test_keyed_digests_depend_on_the_key_and_every_part() -> None:
    assert keyed_digest(KEY, "a", "b") != keyed_digest(b"other-key-16byte", "a", "b")
    assert keyed_digest(KEY, "a", "b") != keyed_digest(KEY, "ab", "")  # parts are separated
    assert len(keyed_digest(KEY, "x")) == 64


def test_addresses_are_masked_in_every_log_line() -> None:
    assert mask_email("alice@example.org") == "a***@example.org"
    assert mask_addresses("to bob.b+x@sub.example.co.uk and rabbit@localhost") == (
        "to b***@sub.example.co.uk and rabbit@localhost"
    )
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "otp.create for %s: %s", ("carol@example.org", "ok"), None
    )
    line = RedactingFormatter("%(message)s").format(record)
    assert line == "otp.create for c***@example.org: ok"
