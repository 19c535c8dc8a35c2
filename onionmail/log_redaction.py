"""Scrub mail addresses and onion hosts from text bound for logs at INFO and above.

Error texts often quote what a peer answered (``550 5.1.1 <bob@...>: no such
user``) or a path; the log is an observer too, so anything shaped like an
address or an onion host is replaced before it is logged.
"""

from __future__ import annotations

import re

_ADDRESS = re.compile(r"[^\s<>\"'@]+@[^\s<>\"']+")
_ONION = re.compile(r"\b[a-z2-7]{56}\.onion\b", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with addresses shown as ``<address>`` and onion hosts as ``<onion>``."""
    return _ONION.sub("<onion>", _ADDRESS.sub("<address>", text))
