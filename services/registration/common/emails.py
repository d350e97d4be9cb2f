"""E-mail address validation and normalisation, the same in the API, the UI and the OTP worker.

Syntax only, with the maintained ``email-validator`` package: no DNS lookup
(``check_deliverability=False``), no quoted local parts, no IP-literal domains, no control or
other non-ASCII characters before the @ (mail relays need not support SMTPUTF8), no special-use
domains such as ``.invalid`` or ``.localhost``, no local part over 64 characters (``strict``). Internationalised domains are kept in their ASCII
(IDNA) form. The normalised address is lower-cased as a whole, as the eligible list always was.
"""

from __future__ import annotations

import re
from typing import Final

from email_validator import EmailNotValidError, validate_email

EMAIL_MAX_LEN: Final = 254


class InvalidEmail(ValueError):
    """Not an e-mail address we accept (the message never repeats the input)."""


def normalize_email(raw: str) -> str:
    """The canonical form of ``raw``, or :class:`InvalidEmail`."""
    if not isinstance(raw, str):
        raise InvalidEmail("not a string")
    candidate = raw.strip(" \t")  # surrounding blanks from a form; any other control char is refused
    if not candidate or len(candidate) > EMAIL_MAX_LEN:
        raise InvalidEmail("empty or too long")
    try:
        checked = validate_email(
            candidate,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
            allow_empty_local=False,
            globally_deliverable=True,
            test_environment=False,
            strict=True,  # also the RFC length limits (64 before the @), which are warnings otherwise
        )
    except EmailNotValidError:
        raise InvalidEmail("not a valid e-mail address") from None
    address = (checked.ascii_email or checked.normalized).lower()
    if len(address) > EMAIL_MAX_LEN:
        raise InvalidEmail("too long")
    return address


def is_valid_email(raw: str) -> bool:
    try:
        normalize_email(raw)
    except InvalidEmail:
        return False
    return True


# Anything shaped like an address in a log line: kept are the first character and the domain.
_ADDRESS_RE: Final = re.compile(
    r"([A-Za-z0-9!#$%&'*+/=?^_`{|}~-])[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)"
)


def mask_email(address: str) -> str:
    """``alice@example.org`` -> ``a***@example.org``: enough to tell domains apart in a log, not who."""
    local, at, domain = str(address).rpartition("@")
    if not at or not local:
        return "<invalid>"
    return f"{local[0]}***@{domain}"


def mask_addresses(text: str) -> str:
    """Every address in ``text`` masked as :func:`mask_email` does (the log formatter's last step)."""
    return _ADDRESS_RE.sub(r"\1***@\2", text)
