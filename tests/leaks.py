"""What a banner, an EHLO reply or a message must never reveal about this machine or software.

Host names are matched as whole labels: a short host name such as ``vm``
also occurs by chance inside a random base32 onion address, which is no leak.
"""

from __future__ import annotations

import re
import socket

SOFTWARE_MARKERS = ("Python", "aiosmtpd", "aiosmtplib", "1.4.")


def host_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    return {n for n in names if n and n not in ("localhost", "localhost.localdomain")}


def host_identity_in(text: str | bytes) -> list[str]:
    """Host names and software markers found in ``text`` (empty list: no leak)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = [m for m in SOFTWARE_MARKERS if m in text]
    for name in host_names():
        if re.search(rf"(?<![A-Za-z0-9-]){re.escape(name)}(?![A-Za-z0-9-])", text, re.I):
            found.append(name)
    return found
