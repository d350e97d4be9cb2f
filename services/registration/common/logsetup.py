"""Logging to stdout with secret redaction and e-mail addresses masked."""

from __future__ import annotations

import logging
import os
import socket
import sys

from registration.common.emails import mask_addresses
from registration.common.secretfiles import redact


class RedactingFormatter(logging.Formatter):
    """Formats a record (message, arguments, traceback), masks every registered secret and shows
    e-mail addresses as ``a***@example.org`` (a log is no list of who asked for what)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_addresses(redact(super().format(record)))


def setup_logging(service: str, level: str | None = None) -> logging.Logger:
    lvl = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        RedactingFormatter(f"%(asctime)s %(levelname)s {service}@{socket.gethostname()} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(lvl)
    # Chatty libraries: keep their warnings, drop their debug noise.
    for noisy in ("aiormq", "aio_pika", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return logging.getLogger(f"registration.{service}")
