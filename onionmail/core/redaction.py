"""Scrub mail addresses, onion and host names, and IP addresses from everything logged.

Error texts quote what a peer answered (``550 5.1.1 <bob@...>: no such
user``), an MX host, a server's banner; the log is an observer too, so the
handler the command lines install formats with :class:`RedactingFormatter`,
which redacts every record, at every level, message and traceback alike:
one place, not a ``redact()`` at each call site (which the next call site
forgets). It redacts a copy: other handlers of a host application see the
record as it was. :func:`redact` stays for texts that leave by other ways
(a bounce, a ledger reason).
"""

from __future__ import annotations

import logging
import re

_ADDRESS = re.compile(r"[^\s<>\"'@,;()\[\]]+@[^\s<>\"',;()\[\]]+")
_ONION = re.compile(r"\b[a-z2-7]{56}\.onion\b\.?", re.IGNORECASE)
# 0.x.x.x is no host's address ("this network"), and is how tor versions look.
_IPV4 = re.compile(r"(?<![\d.])[1-9]\d{0,2}(?:\.\d{1,3}){3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}(?![\w:])", re.IGNORECASE)
_FILE_SUFFIXES = (
    "py|pyc|toml|json|txt|log|sqlite|db|pem|key|crt|svg|html|md|onionmail|lock|tmp|new|cur"
)
_HOST = re.compile(
    r"\b(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    rf"(?!(?:{_FILE_SUFFIXES})\b)[a-z][a-z0-9-]{{1,62}}\b\.?",
    re.IGNORECASE,
)


def redact(text: str, *, host_names: bool = True) -> str:
    """``text`` with addresses, onion and host names and IP addresses replaced by
    ``<address>``, ``<onion>``, ``<host>`` and ``<ip>``."""
    text = _ADDRESS.sub("<address>", text)
    text = _ONION.sub("<onion>", text)
    text = _IPV4.sub("<ip>", text)
    text = _IPV6.sub("<ip>", text)
    return _HOST.sub("<host>", text) if host_names else text


def _redact_traceback(text: str) -> str:
    """A formatted traceback: the exception lines in full, the source lines (indented,
    whose dotted names are code, not hosts) for addresses and IPs only."""
    return "\n".join(redact(line, host_names=not line.startswith(" ")) for line in text.split("\n"))


class RedactingFormatter(logging.Formatter):
    """A formatter that redacts a copy of each record before formatting it."""

    def format(self, record: logging.LogRecord) -> str:
        clean = logging.makeLogRecord(record.__dict__)
        clean.msg, clean.args = redact(record.getMessage()), None
        trace = record.exc_text or (
            self.formatException(record.exc_info) if record.exc_info else ""
        )
        clean.exc_info, clean.exc_text = None, _redact_traceback(trace) if trace else None
        clean.stack_info = _redact_traceback(record.stack_info) if record.stack_info else None
        return super().format(clean)
