"""Finding mail by what a reader sees: From, To, Cc, Subject and the text.

:func:`message_matches` first looks for the words in the file's bytes as
they are (a message in 7-bit or 8-bit text, most mail: one read, no
parsing), and parses the message only when that misses and some part is
encoded (RFC 2047 words in a field, base64 or quoted-printable bodies), so
a search over a folder of 10,000 messages reads each file once and decodes
few. Case is ignored (``str.casefold``).
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
from pathlib import Path

FIELDS = ("From", "To", "Cc", "Subject")
_ENCODED = (b"=?", b"base64", b"quoted-printable")


def message_matches(path: Path, text: str) -> bool:
    """Whether the message at ``path`` shows ``text``; a vanished file does not."""
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return False
    needle = text.casefold()
    lowered = raw.lower()
    if needle.encode("utf-8", "replace") in lowered:
        return True
    if not any(marker in lowered for marker in _ENCODED):
        return False
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    shown = [str(msg.get(name, "")) for name in FIELDS]
    shown.extend(_texts(msg))
    return any(needle in part.casefold() for part in shown)


def _texts(msg: email.message.Message) -> list[str]:
    found = []
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.get_content_disposition() == "attachment":
            continue
        try:
            found.append(str(part.get_content()))  # type: ignore[attr-defined]
        except (LookupError, ValueError):
            continue
    return found
